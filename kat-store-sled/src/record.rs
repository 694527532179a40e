//! The value of an object's `o` entry.
//!
//! Format version 2 writes a compact binary header followed by the object's JSON; the organization,
//! type and natural key are not repeated (they are the entry's key):
//!
//! | bytes | what |
//! | --- | --- |
//! | 1 | `0x02`, the encoding |
//! | 8 | `created_at`, milliseconds, big-endian `i64` |
//! | 8 | `last_seen`, the same |
//! | 1 | flags: `1` created_by, `2` last_seen_by, `4` a scan profile, `8` its level is declared |
//! | 1 | the scan level, `0xFF` for none |
//! | 1 | how many writing tasks follow inline (at most [`INLINE_TASKS`]) |
//! | 16 each | created_by, last_seen_by (when flagged), then the inline tasks |
//! | rest | the object, as kat-core's serde JSON |
//!
//! Format version 1 stored `{"o": StoredObject, "t": [tasks]}` as JSON. Its values start with `{`,
//! never with `0x02`, so both decode: a database half-way through the migration to version 2 reads
//! correctly.

use kat_core::clock::Timestamp;
use kat_core::object::{NaturalKey, Object, ScanLevel, ScanProfile};
use kat_core::org::OrgCode;
use kat_core::store::StoredObject;
use kat_core::task::TaskId;

use crate::error::{SResult, SledStoreError};

/// How many writing tasks an object's record lists itself; later ones get `a` entries.
pub(crate) const INLINE_TASKS: usize = 4;

const COMPACT: u8 = 2;
const HEADER: usize = 20;
const F_CREATED_BY: u8 = 1;
const F_LAST_SEEN_BY: u8 = 2;
const F_SCAN: u8 = 4;
const F_DECLARED: u8 = 8;
const NO_LEVEL: u8 = 0xFF;

/// An object and its first writing tasks.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Record {
    /// The object.
    pub(crate) o: StoredObject,
    /// The first [`INLINE_TASKS`] tasks that wrote it, first seen first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) t: Vec<TaskId>,
}

impl Record {
    /// The compact (format version 2) encoding.
    pub(crate) fn encode(&self) -> SResult<Vec<u8>> {
        let s = &self.o;
        let tasks = self.t.len().min(INLINE_TASKS);
        let mut out = Vec::with_capacity(HEADER + 16 * (2 + tasks) + 96);
        out.push(COMPACT);
        out.extend_from_slice(&s.created_at.0.to_be_bytes());
        out.extend_from_slice(&s.last_seen.0.to_be_bytes());
        let mut flags = 0;
        if s.created_by.is_some() {
            flags |= F_CREATED_BY;
        }
        if s.last_seen_by.is_some() {
            flags |= F_LAST_SEEN_BY;
        }
        if let Some(p) = s.scan {
            flags |= F_SCAN;
            if p.declared {
                flags |= F_DECLARED;
            }
        }
        out.push(flags);
        out.push(
            s.scan
                .and_then(|p| p.level)
                .map_or(NO_LEVEL, ScanLevel::get),
        );
        // `tasks` is at most INLINE_TASKS (4).
        out.push(tasks as u8);
        for t in s.created_by.iter().chain(s.last_seen_by.iter()) {
            out.extend_from_slice(t.0.as_bytes());
        }
        for t in &self.t[..tasks] {
            out.extend_from_slice(t.0.as_bytes());
        }
        serde_json::to_writer(&mut out, &s.object).map_err(|source| SledStoreError::Encode {
            what: "object",
            source,
        })?;
        Ok(out)
    }

    /// Decode a stored value of either format; `org` and `key` come from the entry's key.
    pub(crate) fn decode(org: &OrgCode, key: NaturalKey, bytes: &[u8]) -> SResult<Record> {
        match bytes.first() {
            Some(&COMPACT) => decode_compact(org, key, bytes),
            Some(b'{') => crate::from_json("object", bytes),
            Some(b) => Err(SledStoreError::decode(
                "object",
                format!("unknown record encoding {b:#04x}"),
            )),
            None => Err(SledStoreError::decode("object", "empty record")),
        }
    }
}

/// The scan profile in a stored value's header, without decoding the object: `None` for a value of
/// format version 1 (JSON), which has to be decoded whole.
pub(crate) fn scan_of(bytes: &[u8]) -> SResult<Option<Option<ScanProfile>>> {
    if bytes.first() != Some(&COMPACT) {
        return Ok(None);
    }
    let bad = |why: &str| SledStoreError::decode("object", why.to_string());
    let header = bytes
        .get(..HEADER)
        .ok_or_else(|| bad("record shorter than its header"))?;
    let (flags, level) = (header[17], header[18]);
    if flags & F_SCAN == 0 {
        return Ok(Some(None));
    }
    let level = match level {
        NO_LEVEL => None,
        l => Some(ScanLevel::new(l).map_err(|_| bad("scan level out of range"))?),
    };
    Ok(Some(Some(ScanProfile {
        level,
        declared: flags & F_DECLARED != 0,
    })))
}

fn decode_compact(org: &OrgCode, key: NaturalKey, bytes: &[u8]) -> SResult<Record> {
    let bad = |why: &str| SledStoreError::decode("object", why.to_string());
    let header = bytes
        .get(..HEADER)
        .ok_or_else(|| bad("record shorter than its header"))?;
    let i64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[at..at + 8]);
        i64::from_be_bytes(b)
    };
    let (created_at, last_seen) = (Timestamp(i64_at(1)), Timestamp(i64_at(9)));
    let (flags, level, tasks) = (header[17], header[18], usize::from(header[19]));
    if tasks > INLINE_TASKS {
        return Err(bad("record lists too many tasks"));
    }
    let mut rest = &bytes[HEADER..];
    let mut id = || -> SResult<TaskId> {
        let (head, tail) = rest
            .split_first_chunk::<16>()
            .ok_or_else(|| bad("record ends inside a task id"))?;
        rest = tail;
        Ok(TaskId(uuid::Uuid::from_bytes(*head)))
    };
    let created_by = if flags & F_CREATED_BY != 0 {
        Some(id()?)
    } else {
        None
    };
    let last_seen_by = if flags & F_LAST_SEEN_BY != 0 {
        Some(id()?)
    } else {
        None
    };
    let t = (0..tasks).map(|_| id()).collect::<SResult<Vec<_>>>()?;
    let scan = if flags & F_SCAN != 0 {
        let level = match level {
            NO_LEVEL => None,
            l => Some(ScanLevel::new(l).map_err(|_| bad("scan level out of range"))?),
        };
        Some(ScanProfile {
            level,
            declared: flags & F_DECLARED != 0,
        })
    } else {
        None
    };
    let object: Object = crate::from_json("object", rest)?;
    Ok(Record {
        o: StoredObject {
            org: org.clone(),
            key,
            object,
            scan,
            created_at,
            last_seen,
            created_by,
            last_seen_by,
        },
        t,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kat_core::object::ObjectType;

    fn record(scan: Option<ScanProfile>, by: bool, tasks: usize) -> Record {
        let org = OrgCode::new("acme").expect("org");
        let o = Object::from_json(
            ObjectType::Hostname,
            &serde_json::json!({"name": "a.example.com"}),
        )
        .expect("object");
        let t: Vec<TaskId> = (0..tasks).map(|_| TaskId::new()).collect();
        Record {
            o: StoredObject {
                org,
                key: o.natural_key(),
                object: o,
                scan,
                created_at: Timestamp(-5),
                last_seen: Timestamp(1_700_000_000_123),
                created_by: by.then(|| t.first().copied().unwrap_or_else(TaskId::new)),
                last_seen_by: by.then(TaskId::new),
            },
            t,
        }
    }

    #[test]
    fn compact_round_trips_every_shape() {
        let level = ScanLevel::new(3).expect("level");
        for scan in [
            None,
            Some(ScanProfile::default()),
            Some(ScanProfile::declared(level)),
            Some(ScanProfile {
                level: Some(level),
                declared: false,
            }),
        ] {
            for by in [false, true] {
                for tasks in 0..=INLINE_TASKS {
                    let r = record(scan, by, tasks);
                    let bytes = r.encode().expect("encode");
                    let back = Record::decode(&r.o.org, r.o.key.clone(), &bytes).expect("decode");
                    assert_eq!(back, r);
                }
            }
        }
    }

    #[test]
    fn the_header_alone_gives_the_scan_profile() {
        let level = ScanLevel::new(2).expect("level");
        for scan in [
            None,
            Some(ScanProfile::default()),
            Some(ScanProfile::declared(level)),
        ] {
            let r = record(scan, true, 1);
            let bytes = r.encode().expect("encode");
            assert_eq!(scan_of(&bytes).expect("header"), Some(scan));
            assert!(scan_of(&bytes[..HEADER - 1]).is_err());
        }
        let v1 = serde_json::to_vec(&record(None, false, 0)).expect("json");
        assert_eq!(
            scan_of(&v1).expect("v1"),
            None,
            "version 1 needs a full decode"
        );
    }

    #[test]
    fn version_1_json_still_decodes() {
        let r = record(Some(ScanProfile::default()), true, 2);
        let v1 = serde_json::to_vec(&r).expect("json");
        let back = Record::decode(&r.o.org, r.o.key.clone(), &v1).expect("decode");
        assert_eq!(back, r);
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let r = record(Some(ScanProfile::default()), true, 3);
        let bytes = r.encode().expect("encode");
        for cut in 0..bytes.len() {
            assert!(
                Record::decode(&r.o.org, r.o.key.clone(), &bytes[..cut]).is_err(),
                "a record cut at {cut} decoded"
            );
        }
        let mut wrong = bytes.clone();
        wrong[19] = 9;
        assert!(Record::decode(&r.o.org, r.o.key.clone(), &wrong).is_err());
        let mut level = bytes;
        level[18] = 7;
        assert!(Record::decode(&r.o.org, r.o.key.clone(), &level).is_err());
        assert!(Record::decode(&r.o.org, r.o.key.clone(), &[0x7f]).is_err());
    }
}
