//! The value of an object's `o` entry.
//!
//! Format version 3 writes a compact binary header followed by the object's JSON; the organization,
//! type and natural key are not repeated (they are the entry's key):
//!
//! | bytes | what |
//! | --- | --- |
//! | 1 | `0x03`, the encoding |
//! | 8 | `created_at`, milliseconds, big-endian `i64` |
//! | 8 | `last_seen`, the same |
//! | 1 | flags: `1` created_by, `2` last_seen_by, `4` a scan profile, `8` its level is declared, `16` an inherited_from follows |
//! | 1 | the scan level (the effective one, declared or inherited), `0xFF` for none |
//! | 1 | how many writing tasks follow inline (at most [`INLINE_TASKS`]) |
//! | 16 each | created_by, last_seen_by (when flagged), then the inline tasks |
//! | 1 + n, 2 + m | when flagged: inherited_from, its type's name (length byte, bytes) and natural key (big-endian `u16` length, bytes) |
//! | rest | the object, as kat-core's serde JSON |
//!
//! The level, its flags and inherited_from are read without decoding the JSON ([`node_level`]).
//!
//! Format version 2 wrote the same with `0x02` and never an inherited_from; format version 1 stored
//! `{"o": StoredObject, "t": [tasks]}` as JSON, whose values start with `{`. All three decode, so a
//! database half-way through a migration reads correctly.

use kat_core::clock::Timestamp;
use kat_core::levels::NodeLevel;
use kat_core::object::{NaturalKey, Object, ObjectType, ScanLevel, ScanProfile};
use kat_core::org::OrgCode;
use kat_core::store::StoredObject;
use kat_core::task::{ObjectRef, TaskId};

use crate::error::{SResult, SledStoreError};

/// How many writing tasks an object's record lists itself; later ones get `a` entries.
pub(crate) const INLINE_TASKS: usize = 4;

const COMPACT_V2: u8 = 2;
const COMPACT: u8 = 3;
const HEADER: usize = 20;
const F_FROM: u8 = 16;
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
        let from = s.inherited_from.as_ref().and_then(|r| {
            let ty = r.object_type.as_str().as_bytes();
            let key = r.key.as_str().as_bytes();
            let ty_len = u8::try_from(ty.len()).ok()?;
            let key_len = u16::try_from(key.len()).ok()?;
            Some((ty_len, ty, key_len, key))
        });
        if from.is_some() {
            flags |= F_FROM;
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
        if let Some((ty_len, ty, key_len, key)) = from {
            out.push(ty_len);
            out.extend_from_slice(ty);
            out.extend_from_slice(&key_len.to_be_bytes());
            out.extend_from_slice(key);
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
            Some(&COMPACT | &COMPACT_V2) => decode_compact(org, key, bytes),
            Some(b'{') => crate::from_json("object", bytes),
            Some(b) => Err(SledStoreError::decode(
                "object",
                format!("unknown record encoding {b:#04x}"),
            )),
            None => Err(SledStoreError::decode("object", "empty record")),
        }
    }
}

/// The parts of a compact record before the object's JSON.
struct Head {
    created_at: Timestamp,
    last_seen: Timestamp,
    created_by: Option<TaskId>,
    last_seen_by: Option<TaskId>,
    tasks: Vec<TaskId>,
    scan: Option<ScanProfile>,
    inherited_from: Option<ObjectRef>,
}

/// The level of an object from its stored value, without decoding its JSON: `None` for a type
/// without levels.
pub(crate) fn node_level(
    org: &OrgCode,
    key: NaturalKey,
    bytes: &[u8],
) -> SResult<Option<NodeLevel>> {
    let (scan, from) = match bytes.first() {
        Some(&COMPACT | &COMPACT_V2) => {
            let (h, _) = decode_head(bytes)?;
            (h.scan, h.inherited_from)
        }
        _ => {
            let r = Record::decode(org, key, bytes)?;
            (r.o.scan, r.o.inherited_from)
        }
    };
    Ok(scan.map(|p| NodeLevel {
        level: p.level,
        declared: p.declared,
        inherited_from: from,
    }))
}

fn decode_head(bytes: &[u8]) -> SResult<(Head, &[u8])> {
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
    let inherited_from = if flags & F_FROM != 0 {
        let (&ty_len, tail) = rest
            .split_first()
            .ok_or_else(|| bad("record ends inside inherited_from"))?;
        let ty = tail
            .get(..usize::from(ty_len))
            .ok_or_else(|| bad("record ends inside inherited_from"))?;
        let object_type: ObjectType = std::str::from_utf8(ty)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| bad("inherited_from names an unknown type"))?;
        let tail = &tail[usize::from(ty_len)..];
        let (len, tail) = tail
            .split_first_chunk::<2>()
            .ok_or_else(|| bad("record ends inside inherited_from"))?;
        let len = usize::from(u16::from_be_bytes(*len));
        let k = tail
            .get(..len)
            .ok_or_else(|| bad("record ends inside inherited_from"))?;
        let k = std::str::from_utf8(k).map_err(|_| bad("inherited_from's key is not UTF-8"))?;
        rest = &tail[len..];
        Some(ObjectRef {
            object_type,
            key: NaturalKey::from_escaped_components([k.to_string()]),
        })
    } else {
        None
    };
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
    Ok((
        Head {
            created_at,
            last_seen,
            created_by,
            last_seen_by,
            tasks: t,
            scan,
            inherited_from,
        },
        rest,
    ))
}

/// The scan profile in a stored value's header, without decoding the object: `None` for a value of
/// format version 1 (JSON), which has to be decoded whole.
pub(crate) fn scan_of(bytes: &[u8]) -> SResult<Option<Option<ScanProfile>>> {
    if !matches!(bytes.first(), Some(&COMPACT | &COMPACT_V2)) {
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

/// The object's JSON in a compact record, without decoding the header's parts into a record;
/// `None` for a format version 1 record (JSON throughout: decode it with [`Record::decode`]).
pub(crate) fn object_json(bytes: &[u8]) -> SResult<Option<&[u8]>> {
    match bytes.first() {
        Some(&COMPACT | &COMPACT_V2) => Ok(Some(decode_head(bytes)?.1)),
        _ => Ok(None),
    }
}

fn decode_compact(org: &OrgCode, key: NaturalKey, bytes: &[u8]) -> SResult<Record> {
    let (h, rest) = decode_head(bytes)?;
    let object: Object = crate::from_json("object", rest)?;
    Ok(Record {
        o: StoredObject {
            org: org.clone(),
            key,
            object,
            scan: h.scan,
            inherited_from: h.inherited_from,
            created_at: h.created_at,
            last_seen: h.last_seen,
            created_by: h.created_by,
            last_seen_by: h.last_seen_by,
        },
        t: h.tasks,
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
                inherited_from: None,
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
                    for from in [None, Some("internet|source.example.com")] {
                        let mut r = record(scan, by, tasks);
                        r.o.inherited_from = from.map(|k| ObjectRef {
                            object_type: ObjectType::Hostname,
                            key: NaturalKey::parse(k).expect("key"),
                        });
                        let bytes = r.encode().expect("encode");
                        let back =
                            Record::decode(&r.o.org, r.o.key.clone(), &bytes).expect("decode");
                        assert_eq!(back, r);
                        let level = node_level(&r.o.org, r.o.key.clone(), &bytes).expect("level");
                        assert_eq!(
                            level.map(|l| (l.profile(), l.inherited_from)),
                            r.o.scan.map(|p| (p, r.o.inherited_from.clone()))
                        );
                    }
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
    fn version_2_records_still_decode() {
        let r = record(Some(ScanProfile::default()), true, 2);
        let mut v2 = r.encode().expect("encode");
        v2[0] = COMPACT_V2;
        let back = Record::decode(&r.o.org, r.o.key.clone(), &v2).expect("decode");
        assert_eq!(back, r);
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let mut r = record(Some(ScanProfile::default()), true, 3);
        r.o.inherited_from = Some(ObjectRef {
            object_type: ObjectType::IpAddress,
            key: NaturalKey::parse("internet|192.0.2.1").expect("key"),
        });
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
