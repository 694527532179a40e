//! Order-preserving, prefix-free key encoding.
//!
//! A key is a one-byte tag followed by components. A text component is its bytes with `0x00` escaped as
//! `0x00 0xFF`, then the terminator `0x00 0x01`: no encoded component is a prefix of another, so
//! `("a|b")` and `("a", "|b")` can never collide, and byte order of the encodings is the byte order of
//! the strings (a shorter string sorts before its extensions because the terminator's `0x01` is below
//! every escaped or plain continuation byte after `0x00`). Integers are fixed-width big-endian (signed
//! ones with the sign bit flipped), ids are their 16 bytes.

use sha2::{Digest, Sha256};

/// Longest field value written into an index verbatim; longer values are indexed by a hash of their
/// text (queries re-check every candidate, so a collision costs a lookup, never a wrong answer).
pub(crate) const MAX_INDEXED_VALUE: usize = 256;

/// A key under construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key(Vec<u8>);

impl Key {
    /// A key starting with `tag`.
    pub(crate) fn new(tag: u8) -> Self {
        let mut v = Vec::with_capacity(64);
        v.push(tag);
        Key(v)
    }

    /// Append a text component.
    pub(crate) fn str(mut self, s: &str) -> Self {
        push_str(&mut self.0, s.as_bytes());
        self
    }

    /// Append the encoding of a text component's beginning (no terminator): every component starting
    /// with `s` starts with these bytes.
    pub(crate) fn str_start(mut self, s: &str) -> Self {
        push_str_start(&mut self.0, s.as_bytes());
        self
    }

    /// Append a field value as an index component: short values verbatim, long ones by hash.
    pub(crate) fn index_value(mut self, value: &str) -> Self {
        if value.len() <= MAX_INDEXED_VALUE {
            self.0.push(1);
            push_str(&mut self.0, value.as_bytes());
        } else {
            self.0.push(2);
            let h = Sha256::digest(value.as_bytes());
            self.0.extend_from_slice(&h[..16]);
        }
        self
    }

    /// Append an unsigned number (fixed width, big-endian).
    pub(crate) fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Append a signed number so that byte order is numeric order.
    pub(crate) fn i64(self, v: i64) -> Self {
        self.u64(i64_ord(v))
    }

    /// Append a signed number so that byte order is reverse numeric order (newest first).
    pub(crate) fn i64_desc(self, v: i64) -> Self {
        self.u64(!i64_ord(v))
    }

    /// Append 16 id bytes.
    pub(crate) fn id(mut self, bytes: &[u8; 16]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// Append 16 id bytes inverted (reverse order).
    pub(crate) fn id_desc(mut self, bytes: &[u8; 16]) -> Self {
        self.0.extend(bytes.iter().map(|b| !b));
        self
    }

    /// The encoded bytes.
    pub(crate) fn into_vec(self) -> Vec<u8> {
        self.0
    }

    /// The encoded bytes, borrowed.
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The entries under each of `prefixes` (ascending; one may extend another, and one may come
/// twice), prefix by prefix, each tagged with its prefix's index, read lazily.
///
/// A seek from one prefix runs through its entries to the first key past them, and that key
/// answers every following prefix that sorts below it and does not extend the sought one: none of
/// those has entries. So prefixes without entries between two stored keys cost one seek together,
/// not one each: the new keys of a write, or filter values that match nothing, are mostly such.
pub(crate) struct EntriesUnder {
    tree: sled::Tree,
    prefixes: Vec<Vec<u8>>,
    /// The prefix being read or considered.
    at: usize,
    /// The open scan of `prefixes[at]`.
    scan: Option<sled::Iter>,
    /// The prefix of the last seek, and the first key past its entries (`None`: the tree's end).
    passed: Option<(usize, Option<sled::IVec>)>,
}

impl EntriesUnder {
    pub(crate) fn new(tree: sled::Tree, prefixes: Vec<Vec<u8>>) -> Self {
        EntriesUnder {
            tree,
            prefixes,
            at: 0,
            scan: None,
            passed: None,
        }
    }

    /// Whether what the last seek saw shows that `p` has no entries.
    fn known_empty(&self, p: &[u8]) -> bool {
        let Some((sought, next)) = &self.passed else {
            return false;
        };
        // Entries of a prefix extending the sought one were read (and passed) as the sought one's.
        if self.prefixes.get(*sought).is_none_or(|s| p.starts_with(s)) {
            return false;
        }
        next.as_ref()
            .is_none_or(|k| k.as_ref() > p && !k.starts_with(p))
    }
}

impl Iterator for EntriesUnder {
    type Item = crate::error::SResult<(usize, sled::IVec, sled::IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(scan) = &mut self.scan {
                let p = self.prefixes.get(self.at)?;
                let next = match scan.next() {
                    Some(Ok((k, v))) if k.starts_with(p) => return Some(Ok((self.at, k, v))),
                    Some(Ok((k, _))) => Some(k),
                    None => None,
                    Some(Err(e)) => {
                        self.scan = None;
                        self.at = self.prefixes.len();
                        return Some(Err(e.into()));
                    }
                };
                self.passed = Some((self.at, next));
                self.scan = None;
                self.at += 1;
                continue;
            }
            let p = self.prefixes.get(self.at)?;
            if self.known_empty(p) {
                self.at += 1;
                continue;
            }
            self.scan = Some(self.tree.range(p.as_slice()..));
        }
    }
}

/// The entries under each of `prefixes` (ascending), in that order ([`EntriesUnder`]).
pub(crate) fn entries_under(
    tree: &sled::Tree,
    prefixes: Vec<Vec<u8>>,
) -> crate::error::SResult<Vec<Vec<(sled::IVec, sled::IVec)>>> {
    let mut out = vec![Vec::new(); prefixes.len()];
    for entry in EntriesUnder::new(tree.clone(), prefixes) {
        let (i, k, v) = entry?;
        if let Some(slot) = out.get_mut(i) {
            slot.push((k, v));
        }
    }
    Ok(out)
}

/// Whether `tree` holds a key from `lowest` up to the last key starting with `highest`: one seek
/// that answers for every prefix between the two at once.
pub(crate) fn any_between(
    tree: &sled::Tree,
    lowest: &[u8],
    highest: &[u8],
) -> crate::error::SResult<bool> {
    use std::ops::Bound;
    // The first key past every key starting with `highest`: its last byte below 0xFF, raised.
    let mut end = highest.to_vec();
    let upper = loop {
        match end.pop() {
            Some(0xFF) => continue,
            Some(b) => {
                end.push(b + 1);
                break Bound::Excluded(end);
            }
            None => break Bound::Unbounded,
        }
    };
    let range = (Bound::Included(lowest.to_vec()), upper);
    Ok(tree
        .range::<Vec<u8>, _>(range)
        .next()
        .transpose()?
        .is_some())
}

fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    for &b in s {
        if b == 0 {
            out.extend_from_slice(&[0, 0xFF]);
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&[0, 1]);
}

/// Append the encoding of a text component's beginning to `out` ([`Key::str_start`]).
pub(crate) fn push_str_start(out: &mut Vec<u8>, s: &[u8]) {
    push_str(out, s);
    out.truncate(out.len() - 2);
}

/// Order-preserving unsigned form of a signed number.
pub(crate) fn i64_ord(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

/// Undo [`i64_ord`].
pub(crate) fn i64_from_ord(v: u64) -> i64 {
    (v ^ (1 << 63)) as i64
}

/// Decode one text component at the start of `bytes`; returns it and the rest, or `None` when the
/// bytes are not a well-formed component.
pub(crate) fn take_str(bytes: &[u8]) -> Option<(String, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == 0 {
            match bytes.get(i + 1)? {
                0x01 => return Some((String::from_utf8(out).ok()?, &bytes[i + 2..])),
                0xFF => {
                    out.push(0);
                    i += 2;
                }
                _ => return None,
            }
        } else {
            out.push(b);
            i += 1;
        }
    }
    None
}

/// Read a big-endian `u64` at the start of `bytes`.
pub(crate) fn take_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let head: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(head), &bytes[8..]))
}

/// Read 16 id bytes at the start of `bytes`.
pub(crate) fn take_id(bytes: &[u8]) -> Option<([u8; 16], &[u8])> {
    let head: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
    Some((head, &bytes[16..]))
}

/// Decode a `u64` value.
pub(crate) fn u64_value(bytes: &[u8]) -> Option<u64> {
    take_u64(bytes).and_then(|(v, rest)| rest.is_empty().then_some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_never_collide() {
        let a = Key::new(b'x').str("a|b").into_vec();
        let b = Key::new(b'x').str("a").str("|b").into_vec();
        assert_ne!(a, b);
        let c = Key::new(b'x').str("a\0").str("b").into_vec();
        let d = Key::new(b'x').str("a").str("\0b").into_vec();
        assert_ne!(c, d);
        // A component's encoding is never a prefix of a longer component's encoding.
        let short = Key::new(b'x').str("ab").into_vec();
        let long = Key::new(b'x').str("abc").into_vec();
        assert!(!long.starts_with(&short));
    }

    #[test]
    fn order_is_preserved() {
        let words = [
            "", "\0", "\0\0", "a", "a\0", "a\0b", "ab", "b", "b\u{1}", "ba",
        ];
        let mut sorted = words.to_vec();
        sorted.sort();
        let enc: Vec<Vec<u8>> = sorted
            .iter()
            .map(|w| Key::new(0).str(w).str("tail").into_vec())
            .collect();
        let mut enc_sorted = enc.clone();
        enc_sorted.sort();
        assert_eq!(enc, enc_sorted);
        let nums = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        let e: Vec<Vec<u8>> = nums
            .iter()
            .map(|n| Key::new(0).i64(*n).into_vec())
            .collect();
        let mut s = e.clone();
        s.sort();
        assert_eq!(e, s);
        let d: Vec<Vec<u8>> = nums
            .iter()
            .map(|n| Key::new(0).i64_desc(*n).into_vec())
            .collect();
        let mut s = d.clone();
        s.sort();
        s.reverse();
        assert_eq!(d, s);
    }

    #[test]
    fn round_trips() {
        for w in ["", "plain", "with\0nul", "\0", "ünïcode|%7C"] {
            let k = Key::new(b'o').str(w).str("next").into_vec();
            let (got, rest) = take_str(&k[1..]).expect("decodes");
            assert_eq!(got, w);
            let (next, rest) = take_str(rest).expect("decodes");
            assert_eq!((next.as_str(), rest), ("next", &[][..]));
        }
        assert!(take_str(b"unterminated").is_none());
        assert!(take_str(&[b'a', 0, 7]).is_none());
        for n in [i64::MIN, -1, 0, 42, i64::MAX] {
            assert_eq!(i64_from_ord(i64_ord(n)), n);
        }
        let long = "v".repeat(MAX_INDEXED_VALUE + 1);
        let k = Key::new(b'i').index_value(&long).into_vec();
        assert_eq!(k.len(), 1 + 1 + 16, "long values are hashed");
    }

    #[test]
    fn entries_under_answers_every_prefix_as_a_scan_would() {
        let db = sled::Config::new().temporary(true).open().expect("sled");
        let tree = db.open_tree("t").expect("tree");
        // Nodes 0..60: every third has two entries, every fifth one; others none. Keys of another
        // tag before and after, so a seek can run off the nodes' keys both ways.
        let node = |i: usize| Key::new(b'r').str("org").str(&format!("n{i:02}"));
        tree.insert(Key::new(b'a').str("before").into_vec(), &b"x"[..])
            .expect("insert");
        tree.insert(Key::new(b's').str("after").into_vec(), &b"x"[..])
            .expect("insert");
        for i in 0..60 {
            let entries = match i {
                i if i % 3 == 0 => 2,
                i if i % 5 == 0 => 1,
                _ => 0,
            };
            for e in 0..entries {
                let k = node(i).str(&format!("edge{e}")).into_vec();
                tree.insert(k, vec![i as u8]).expect("insert");
            }
        }
        // Nodes stored and not (60..70 sort after every stored node), in several selections.
        let selections: Vec<Vec<usize>> = vec![
            (0..70).collect(),
            (1..70).step_by(7).collect(),
            vec![1, 2, 4, 7],
            vec![65, 69],
            vec![3],
            vec![],
        ];
        for sel in selections {
            let prefixes: Vec<Vec<u8>> = sel.iter().map(|&i| node(i).into_vec()).collect();
            let refs: Vec<&[u8]> = prefixes.iter().map(Vec::as_slice).collect();
            let got = entries_under(&tree, prefixes.clone()).expect("entries");
            assert_eq!(got.len(), refs.len());
            for (p, entries) in refs.iter().zip(&got) {
                let want: Vec<(sled::IVec, sled::IVec)> =
                    tree.scan_prefix(p).collect::<Result<_, _>>().expect("scan");
                assert_eq!(entries, &want, "prefix {p:?} in selection {sel:?}");
            }
        }
    }

    #[test]
    fn any_between_sees_keys_from_the_lowest_to_the_end_of_the_highest_prefix() {
        let db = sled::Config::new().temporary(true).open().expect("sled");
        let tree = db.open_tree("t").expect("tree");
        for k in [&b"a"[..], b"c\xff\xff", b"e\x01x", b"g"] {
            tree.insert(k, &b""[..]).expect("insert");
        }
        let cases: [(&[u8], &[u8], bool); 9] = [
            (b"a", b"a", true),
            (b"a0", b"b", false),
            (b"b", b"c", true),
            (b"c\xff\xff", b"c\xff\xff", true),
            (b"c\xff\xff\x00", b"d", false),
            (b"d", b"e", true),
            (b"e\x01y", b"f", false),
            (b"f", b"\xff\xff", true),
            (b"h", b"\xff", false),
        ];
        for (lowest, highest, want) in cases {
            assert_eq!(
                any_between(&tree, lowest, highest).expect("range"),
                want,
                "{lowest:?}..{highest:?}"
            );
        }
    }

    #[test]
    fn entries_under_handles_prefixes_that_extend_others_and_repeats() {
        let db = sled::Config::new().temporary(true).open().expect("sled");
        let tree = db.open_tree("t").expect("tree");
        for name in ["a", "ab", "ab1", "abc", "ac", "b", "ba", "bb2", "c"] {
            tree.insert(Key::new(b'o').str(name).into_vec(), name.as_bytes())
                .expect("insert");
        }
        // Beginnings of names (no terminator), so "a" is a prefix of "ab" and "abc".
        let start = |s: &str| Key::new(b'o').str_start(s).into_vec();
        let sets: Vec<Vec<&str>> = vec![
            vec!["a", "ab", "abc", "ac", "b", "bb", "c"],
            vec!["a", "a", "ab", "ab"],
            vec!["aa", "ab", "abd", "ad", "bc", "bb", "d"],
            vec!["", "a"],
            vec!["abz", "ac", "b"],
        ];
        for mut set in sets {
            let mut prefixes: Vec<Vec<u8>> = set.iter().map(|s| start(s)).collect();
            prefixes.sort();
            set.sort_by_key(|s| start(s));
            let refs: Vec<&[u8]> = prefixes.iter().map(Vec::as_slice).collect();
            let got = entries_under(&tree, prefixes.clone()).expect("entries");
            for ((name, p), entries) in set.iter().zip(&refs).zip(&got) {
                let want: Vec<(sled::IVec, sled::IVec)> =
                    tree.scan_prefix(p).collect::<Result<_, _>>().expect("scan");
                assert_eq!(entries, &want, "beginning {name:?} in {set:?}");
            }
        }
    }
}
