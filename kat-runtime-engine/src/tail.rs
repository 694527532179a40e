//! A byte buffer that keeps only the last `cap` bytes written to it.

use std::collections::VecDeque;

/// Keeps the last `cap` bytes of a stream, whatever its length: memory stays bounded by `cap`.
///
/// What a runtime collects a container's stdout and stderr into, one tail per stream, to fill
/// [`Outcome::stdout_tail`](kat_core::runtime::Outcome::stdout_tail) and
/// [`Outcome::stderr_tail`](kat_core::runtime::Outcome::stderr_tail).
///
/// ```
/// use kat_runtime_engine::OutputTail;
/// let mut t = OutputTail::new(5);
/// t.push(b"hello ");
/// t.push(b"world");
/// assert_eq!(t.total(), 11);
/// assert_eq!(t.into_vec(), b"world");
/// ```
#[derive(Debug, Clone)]
pub struct OutputTail {
    cap: usize,
    buf: VecDeque<u8>,
    total: u64,
}

impl OutputTail {
    /// An empty tail keeping at most `cap` bytes.
    ///
    /// ```
    /// let t = kat_runtime_engine::OutputTail::new(1024);
    /// assert!(t.is_empty());
    /// assert_eq!(t.capacity(), 1024);
    /// ```
    pub fn new(cap: usize) -> Self {
        OutputTail {
            cap,
            buf: VecDeque::with_capacity(cap.min(64 * 1024)),
            total: 0,
        }
    }

    /// Append `data`, dropping the oldest bytes beyond the bound.
    ///
    /// ```
    /// let mut t = kat_runtime_engine::OutputTail::new(3);
    /// t.push(b"xy");
    /// t.push(b"0123456789");
    /// assert_eq!(t.into_vec(), b"789");
    /// ```
    pub fn push(&mut self, data: &[u8]) {
        self.total = self.total.saturating_add(data.len() as u64);
        if self.cap == 0 {
            return;
        }
        if data.len() >= self.cap {
            self.buf.clear();
            self.buf.extend(&data[data.len() - self.cap..]);
            return;
        }
        let overflow = (self.buf.len() + data.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.buf.extend(data);
    }

    /// How many bytes were pushed in total (kept or not).
    ///
    /// ```
    /// let mut t = kat_runtime_engine::OutputTail::new(0);
    /// t.push(b"abc");
    /// assert_eq!(t.total(), 3);
    /// assert!(t.is_empty());
    /// ```
    pub fn total(&self) -> u64 {
        self.total
    }

    /// How many bytes are kept.
    ///
    /// ```
    /// let mut t = kat_runtime_engine::OutputTail::new(4);
    /// t.push(b"abcdef");
    /// assert_eq!(t.len(), 4);
    /// ```
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is kept.
    ///
    /// ```
    /// assert!(kat_runtime_engine::OutputTail::new(4).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bound.
    ///
    /// ```
    /// assert_eq!(kat_runtime_engine::OutputTail::new(9).capacity(), 9);
    /// ```
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The kept bytes.
    ///
    /// ```
    /// let mut t = kat_runtime_engine::OutputTail::new(8);
    /// t.push(b"out\n");
    /// assert_eq!(t.into_vec(), b"out\n");
    /// ```
    pub fn into_vec(self) -> Vec<u8> {
        self.buf.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes() {
        let mut t = OutputTail::new(5);
        t.push(b"ab");
        t.push(b"cd");
        assert_eq!(t.buf.iter().copied().collect::<Vec<_>>(), b"abcd");
        t.push(b"efg");
        assert_eq!(t.total(), 7);
        assert_eq!(t.into_vec(), b"cdefg");
    }

    #[test]
    fn a_large_chunk_replaces_everything() {
        let mut t = OutputTail::new(3);
        t.push(b"xy");
        t.push(b"0123456789");
        assert_eq!(t.into_vec(), b"789");
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut t = OutputTail::new(0);
        t.push(b"abc");
        assert_eq!(t.total(), 3);
        assert!(t.into_vec().is_empty());
    }

    #[test]
    fn equals_the_suffix_of_the_whole_stream() {
        let whole: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        for cap in [1, 7, 100, 4096, 10_000, 20_000] {
            let mut t = OutputTail::new(cap);
            for chunk in whole.chunks(333) {
                t.push(chunk);
            }
            let start = whole.len().saturating_sub(cap);
            assert_eq!(t.into_vec(), &whole[start..], "cap {cap}");
        }
    }
}
