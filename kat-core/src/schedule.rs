//! Schedules and object sets: which plugin runs over which objects, how often.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::clock::Timestamp;
use crate::control::Submitter;
use crate::object::{NaturalKey, ObjectType};
use crate::org::OrgCode;
use crate::{Error, Result};

/// An ISO 8601 duration such as `PT24H`, `P1D`, `P1W`, `PT30M` (years and months are refused: they
/// have no fixed length).
///
/// ```
/// use kat_core::schedule::Interval;
/// let i: Interval = "PT24H".parse().unwrap();
/// assert_eq!(i.as_secs(), 86_400);
/// assert_eq!(i.to_string(), "PT24H");
/// assert!("P1M".parse::<Interval>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interval(u64);

impl Interval {
    /// An interval of `secs` seconds (at least one).
    ///
    /// # Errors
    /// [`Error::Invalid`] for zero.
    pub fn from_secs(secs: u64) -> Result<Self> {
        if secs == 0 {
            return Err(Error::invalid(
                "interval",
                "an interval must be longer than zero",
            ));
        }
        Ok(Interval(secs))
    }

    /// Its length in seconds.
    pub fn as_secs(self) -> u64 {
        self.0
    }

    /// Its length.
    pub fn as_duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl FromStr for Interval {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid(
                "interval",
                format!("not an ISO 8601 duration {s:?} (like PT24H, P1D, PT30M): {why}"),
            )
        };
        let body = s
            .trim()
            .strip_prefix(['P', 'p'])
            .ok_or_else(|| bad("it must start with P"))?;
        if body.is_empty() {
            return Err(bad("no amount"));
        }
        let mut total: u64 = 0;
        let mut in_time = false;
        let mut num = String::new();
        let mut any = false;
        for c in body.chars() {
            match c.to_ascii_uppercase() {
                'T' if !in_time && num.is_empty() => in_time = true,
                d if d.is_ascii_digit() => num.push(d),
                unit => {
                    if num.is_empty() {
                        return Err(bad("a unit without a number"));
                    }
                    let n: u64 = num.parse().map_err(|_| bad("number too large"))?;
                    num.clear();
                    let mult = match (in_time, unit) {
                        (false, 'W') => 604_800,
                        (false, 'D') => 86_400,
                        (true, 'H') => 3_600,
                        (true, 'M') => 60,
                        (true, 'S') => 1,
                        (false, 'Y' | 'M') => {
                            return Err(bad("years and months have no fixed length"));
                        }
                        _ => return Err(bad(&format!("unexpected {c:?}"))),
                    };
                    total = n
                        .checked_mul(mult)
                        .and_then(|v| total.checked_add(v))
                        .ok_or_else(|| bad("too long"))?;
                    any = true;
                }
            }
        }
        if !num.is_empty() {
            return Err(bad("a number without a unit"));
        }
        if !any {
            return Err(bad("no amount"));
        }
        Interval::from_secs(total).map_err(|_| bad("it is zero"))
    }
}

impl fmt::Display for Interval {
    /// Written with hours, minutes and seconds only (`PT24H` for a day), the manual's style.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
        write!(f, "PT")?;
        if h > 0 {
            write!(f, "{h}H")?;
        }
        if m > 0 {
            write!(f, "{m}M")?;
        }
        if sec > 0 {
            write!(f, "{sec}S")?;
        }
        Ok(())
    }
}

impl Serialize for Interval {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A schedule's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScheduleId(pub Uuid);

impl ScheduleId {
    /// A new random id.
    pub fn new() -> Self {
        ScheduleId(Uuid::new_v4())
    }
}

impl Default for ScheduleId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ScheduleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An object set's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ObjectSetId(pub Uuid);

impl ObjectSetId {
    /// A new random id.
    pub fn new() -> Self {
        ObjectSetId(Uuid::new_v4())
    }
}

impl Default for ObjectSetId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ObjectSetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A set of objects of one type: every object matching `filters` (all of them when `all` is set)
/// plus the explicit `keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectSet {
    /// Its id.
    pub id: ObjectSetId,
    /// Its integer id, the `id` the API shows and takes (`"object_set_id": 123`, as in the original):
    /// unique among object sets, never reused. `0` means none yet: [`crate::store::ScheduleStore::put_object_set`]
    /// assigns the next one.
    #[serde(default)]
    pub number: u64,
    /// A unique name within its organization.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// The organization whose objects it selects.
    pub org: OrgCode,
    /// The type of its objects.
    pub object_type: ObjectType,
    /// Whether every object of the type is in the set.
    #[serde(default)]
    pub all: bool,
    /// Field filters (field, accepted values), as the object API's query parameters.
    #[serde(default)]
    pub filters: Vec<(String, Vec<String>)>,
    /// Objects in the set by key, whatever the filters say.
    #[serde(default)]
    pub keys: Vec<NaturalKey>,
}

/// A plugin run every `interval` over an object set (or with no input when there is none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Its id.
    pub id: ScheduleId,
    /// Its integer id, the `id` the API shows and takes, as in the original: unique among schedules,
    /// never reused. `0` means none yet: [`crate::store::ScheduleStore::put_schedule`] assigns the next
    /// one.
    #[serde(default)]
    pub number: u64,
    /// The organization; `None` runs it for every organization.
    pub org: Option<OrgCode>,
    /// The plugin.
    pub plugin_id: String,
    /// The objects it runs over.
    pub object_set: Option<ObjectSetId>,
    /// How often.
    pub interval: Interval,
    /// Whether it runs.
    pub enabled: bool,
    /// When it is next due.
    pub next_run_at: Timestamp,
    /// When it last ran.
    pub last_run_at: Option<Timestamp>,
    /// When it was created.
    pub created_at: Timestamp,
    /// Whose rights it runs with: who created it (or last changed its plugin or enabled it), with the
    /// token they used and a snapshot of their permissions. At every tick the engine checks that this
    /// token is neither revoked nor expired and that the permissions still cover the plugin's;
    /// otherwise the schedule creates nothing and is disabled with a [`Schedule::disabled_reason`].
    /// `None` for a schedule an embedding program stored itself: it runs with the operator's rights.
    #[serde(default)]
    pub owner: Option<Submitter>,
    /// Why the engine disabled it (its owner's token was revoked or expired, or no longer covers the
    /// plugin's permissions); cleared when someone enables it again.
    #[serde(default)]
    pub disabled_reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        for (s, secs) in [
            ("PT24H", 86_400),
            ("P1D", 86_400),
            ("P1W", 604_800),
            ("PT30M", 1_800),
            ("PT1S", 1),
            ("P1DT1H1M1S", 90_061),
            ("pt5m", 300),
        ] {
            assert_eq!(s.parse::<Interval>().unwrap().as_secs(), secs, "{s}");
        }
        for bad in [
            "",
            "P",
            "PT",
            "24H",
            "P1M",
            "P1Y",
            "PT0S",
            "P1H",
            "PT1D",
            "PT5",
            "PTM",
            "P99999999999999999999D",
        ] {
            assert!(bad.parse::<Interval>().is_err(), "{bad}");
        }
        let e = "P1M".parse::<Interval>().unwrap_err().to_string();
        assert!(e.contains("months"), "{e}");
    }

    #[test]
    fn intervals_display_and_round_trip() {
        for secs in [1, 59, 60, 3600, 86_400, 90_061, 604_800] {
            let i = Interval::from_secs(secs).unwrap();
            assert_eq!(i.to_string().parse::<Interval>().unwrap(), i);
        }
        let j = serde_json::to_string(&Interval::from_secs(86_400).unwrap()).unwrap();
        assert_eq!(j, "\"PT24H\"");
        assert_eq!(
            Interval::from_secs(90_061).unwrap().to_string(),
            "PT25H1M1S"
        );
    }
}
