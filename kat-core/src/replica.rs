//! Replicas: the katd processes sharing one database, what each runs ([`Role`]) and the heartbeat
//! each writes ([`ReplicaInfo`], kept by a [`ReplicaRegistry`](crate::store::ReplicaRegistry)).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::{Error, Result};

/// What a replica does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Serves the API: submits and cancels tasks, runs none.
    Api,
    /// Claims queued tasks and runs their containers; recovers expired leases and reaps containers
    /// whose task no live lease holds.
    Worker,
    /// Runs the scheduler's ticks.
    Scheduler,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Api, Role::Worker, Role::Scheduler];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Worker => "worker",
            Role::Scheduler => "scheduler",
        }
    }

    /// Parse a comma-separated list (`KAT_ROLES`, e.g. `api,worker`); spaces around names are
    /// ignored.
    ///
    /// ```
    /// use kat_core::replica::Role;
    /// let roles = Role::parse_list("api, scheduler").unwrap();
    /// assert!(roles.contains(&Role::Api) && !roles.contains(&Role::Worker));
    /// assert!(Role::parse_list("api,cook").is_err());
    /// assert!(Role::parse_list(" ").is_err());
    /// ```
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown name or an empty list.
    pub fn parse_list(s: &str) -> Result<BTreeSet<Role>> {
        let roles = s
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(Role::from_str)
            .collect::<Result<BTreeSet<Role>>>()?;
        if roles.is_empty() {
            return Err(Error::invalid(
                "KAT_ROLES",
                "no role: name at least one of api, worker, scheduler",
            ));
        }
        Ok(roles)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "KAT_ROLES",
                    format!("unknown role {s:?}; roles are api, worker and scheduler"),
                )
            })
    }
}

/// A replica's heartbeat: who it is, what it runs, and when it was last heard of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    /// Its id (the engine's [`worker_id`](crate::engine::EngineConfig::worker_id)).
    pub id: String,
    /// What it runs.
    pub roles: BTreeSet<Role>,
    /// When it started.
    pub started_at: Timestamp,
    /// Its last heartbeat.
    pub last_seen: Timestamp,
    /// How many tasks it was running then.
    pub running: u32,
    /// Its version (the crate's).
    pub version: String,
}
