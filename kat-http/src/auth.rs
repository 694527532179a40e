//! Who is calling, and what they may do: the `Authorization` header, the token's claims and the
//! shared permission check of kat-core ([`Permissions::check`]).

use std::collections::BTreeSet;

use http::HeaderMap;

use kat_core::Error;
use kat_core::clock::Timestamp;
use kat_core::control::{Submitter, SubmitterToken};
use kat_core::org::OrgCode;
use kat_core::permission::{Access, Decision, PermissionName, Permissions};
use kat_core::store::OrgStore;
use kat_core::task::TaskId;
use kat_core::token::{Claims, TokenAuthority};

use crate::error::{ApiError, ApiResult};
use crate::jwt::MAX_TOKEN_BYTES;

/// The token from `Authorization: Token <jwt>` or `Bearer <jwt>`.
pub(crate) fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(ApiError::not_authenticated());
    };
    if values.next().is_some() {
        return Err(ApiError::authentication_failed(
            "Invalid token header. Several Authorization headers.",
        ));
    }
    if value.len() > MAX_TOKEN_BYTES + 16 {
        return Err(ApiError::authentication_failed("Invalid token."));
    }
    let value = value
        .to_str()
        .map_err(|_| ApiError::authentication_failed("Invalid token header."))?;
    let mut words = value.split_ascii_whitespace();
    let (Some(scheme), Some(token), None) = (words.next(), words.next(), words.next()) else {
        return Err(ApiError::authentication_failed(
            "Invalid token header. Expected \"Token <jwt>\" or \"Bearer <jwt>\".",
        ));
    };
    if !(scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer")) {
        return Err(ApiError::authentication_failed(
            "Invalid token header. Expected \"Token <jwt>\" or \"Bearer <jwt>\".",
        ));
    }
    Ok(token)
}

/// Verify the request's token, and that its organization exists and existed when the token was
/// issued (a token of a deleted organization is refused at once, and stays refused when the code is
/// used again). The organization is asked of the [`OrgStore`] on every request (the sled store
/// answers from its in-memory copy, which its own writes keep current), never cached here.
pub(crate) async fn authenticate(
    tokens: &dyn TokenAuthority,
    orgs: &dyn OrgStore,
    headers: &HeaderMap,
) -> ApiResult<Caller> {
    let token = bearer(headers)?;
    let claims = match tokens.verify(token).await {
        Ok(claims) => claims,
        Err(Error::Unauthenticated(why)) => {
            tracing::debug!(%why, "token refused");
            return Err(ApiError::authentication_failed("Invalid token."));
        }
        Err(other) => return Err(other.into()),
    };
    match orgs.get_organization(&claims.org).await? {
        Some(o) if o.admits_token_issued_at(claims.iat) => Ok(Caller { claims }),
        Some(_) => {
            tracing::debug!(org = %claims.org, "token refused: issued before its organization was created");
            Err(ApiError::authentication_failed("Invalid token."))
        }
        None => {
            tracing::debug!(org = %claims.org, "token refused: no such organization");
            Err(ApiError::authentication_failed(
                "Invalid token: its organization does not exist.",
            ))
        }
    }
}

/// An authenticated caller.
#[derive(Debug)]
pub(crate) struct Caller {
    pub(crate) claims: Claims,
}

fn denied(name: &PermissionName, what: Option<&str>) -> ApiError {
    match what {
        Some(pk) => ApiError::permission_denied(format!(
            "You do not have permission to perform this action ({name} on {pk:?})."
        )),
        None => ApiError::permission_denied(format!(
            "You do not have permission to perform this action ({name})."
        )),
    }
}

/// What a list may contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListScope {
    /// Everything (of the caller's organization).
    All,
    /// Only these pks.
    Only(BTreeSet<String>),
}

impl Caller {
    pub(crate) fn org(&self) -> &OrgCode {
        &self.claims.org
    }

    /// The task the caller's writes are attributed to (from the token, never from the request).
    pub(crate) fn task(&self) -> Option<TaskId> {
        self.claims.task_id
    }

    /// The caller as a submitter of tasks and schedules: the token's subject, permissions, id and
    /// expiry.
    pub(crate) fn submitter(&self) -> Submitter {
        Submitter {
            subject: self.claims.sub.clone(),
            permissions: self.claims.permissions.clone(),
            token: Some(SubmitterToken {
                jti: self.claims.jti.clone(),
                expires_at: Timestamp::from_secs(self.claims.exp),
            }),
        }
    }

    fn perms(&self) -> &Permissions {
        &self.claims.permissions
    }

    /// Whether the caller holds a permission at all (any scope).
    pub(crate) fn has(&self, name: &PermissionName) -> bool {
        self.perms().has(name)
    }

    /// One object or file by pk.
    pub(crate) fn require_pk(&self, name: PermissionName, pk: &str) -> ApiResult<()> {
        match self.perms().check(&name, &Access::Object(pk)) {
            Decision::Deny => Err(denied(&name, Some(pk))),
            _ => Ok(()),
        }
    }

    /// A list with the request's `search` and `limit`.
    pub(crate) fn require_list(
        &self,
        name: PermissionName,
        search: Option<&str>,
        limit: Option<u64>,
    ) -> ApiResult<ListScope> {
        match self.perms().check(&name, &Access::List { search, limit }) {
            Decision::Allow => Ok(ListScope::All),
            Decision::AllowOnly(pks) => Ok(ListScope::Only(pks)),
            Decision::Deny => Err(denied(&name, None)),
        }
    }

    /// Creating something whose pk is not known yet (a file, a task, a schedule): allowed only by a
    /// scope without `pks` that admits the request's `search` and `limit` (none on these routes).
    pub(crate) fn require_create(&self, name: PermissionName) -> ApiResult<()> {
        match self.require_list(name, None, None)? {
            ListScope::All => Ok(()),
            ListScope::Only(_) => Err(denied(&name, None)),
        }
    }
}
