//! The [`FileStore`] conformance suite.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::object::ScanLevel;
use crate::org::OrgCode;
use crate::store::{ByteStream, FileId, FileQuery, FileStore, LevelSource, NewFile, Ordering};
use crate::task::TaskId;
use crate::{Error, Result};

fn org(s: &str) -> OrgCode {
    OrgCode::new(s).expect("valid org code")
}

fn new_file(o: &OrgCode, ty: &str, task: Option<TaskId>) -> NewFile {
    NewFile {
        org: o.clone(),
        file_type: ty.into(),
        name: "stdout".into(),
        task,
        scan_level: ScanLevel::new(2).ok(),
        level_from: LevelSource::Objects,
    }
}

fn body(data: &'static [u8]) -> ByteStream {
    Box::pin(futures::stream::iter(
        data.chunks(3)
            .map(|c| Ok(Bytes::from_static(c)))
            .collect::<Vec<_>>(),
    ))
}

/// Read a whole file (for small files).
pub async fn read_all(store: &dyn FileStore, id: FileId) -> Result<Vec<u8>> {
    let mut s = store.open(id).await?;
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

/// A file goes in as a stream and comes out the same, with size and sha256 in its metadata.
pub async fn put_and_read_back(store: &dyn FileStore) -> Result<()> {
    let o = org("f-rt");
    let t = TaskId::new();
    let m = store
        .put(
            new_file(&o, "nmap", Some(t)),
            body(b"<nmaprun>hello</nmaprun>\n"),
        )
        .await?;
    assert_eq!(m.size, 25);
    assert_eq!(
        m.sha256,
        hex::encode(Sha256::digest(b"<nmaprun>hello</nmaprun>\n"))
    );
    assert_eq!(
        (m.file_type.as_str(), m.name.as_str(), m.task, &m.org),
        ("nmap", "stdout", Some(t), &o)
    );
    assert_eq!(store.meta(m.id).await?, Some(m.clone()));
    assert_eq!(read_all(store, m.id).await?, b"<nmaprun>hello</nmaprun>\n");
    let empty = store.put(new_file(&o, "nmap", None), body(b"")).await?;
    assert_eq!(empty.size, 0);
    assert_eq!(read_all(store, empty.id).await?, b"");
    assert_ne!(empty.id, m.id);
    assert!(empty.id > m.id, "ids increase");
    Ok(())
}

/// Missing files, deletes, bad types and failing streams.
pub async fn missing_delete_and_errors(store: &dyn FileStore) -> Result<()> {
    let o = org("f-err");
    assert!(store.meta(FileId(u64::MAX)).await?.is_none());
    match store.open(FileId(u64::MAX)).await {
        Err(Error::NotFound { .. }) => {}
        Err(e) => panic!("expected NotFound, got {e}"),
        Ok(_) => panic!("expected NotFound, got a stream"),
    }
    let m = store.put(new_file(&o, "x", None), body(b"abc")).await?;
    assert!(store.delete(m.id).await?);
    assert!(!store.delete(m.id).await?);
    assert!(store.meta(m.id).await?.is_none());
    assert!(store.open(m.id).await.is_err());
    let e = store
        .put(new_file(&o, "bad type", None), body(b"abc"))
        .await
        .expect_err("bad type");
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    for name in [".", "..", "", "a/b"] {
        let mut f = new_file(&o, "x", None);
        f.name = name.into();
        let e = store.put(f, body(b"abc")).await.expect_err(name);
        assert!(
            matches!(e, Error::Invalid { ref at, .. } if at == "name"),
            "{name:?}: {e}"
        );
    }
    let before = store.query(&FileQuery::new(o.clone())).await?.count;
    let failing: ByteStream = Box::pin(futures::stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ]));
    assert!(store.put(new_file(&o, "x", None), failing).await.is_err());
    assert_eq!(
        store.query(&FileQuery::new(o.clone())).await?.count,
        before,
        "a failed upload stores nothing"
    );
    Ok(())
}

/// Queries: by type, task, ids, search, ordering, paging, and organization isolation.
pub async fn queries(store: &dyn FileStore) -> Result<()> {
    let (a, b) = (org("f-q-a"), org("f-q-b"));
    let t = TaskId::new();
    let mut ids = Vec::new();
    for ty in ["nmap", "dns", "nmap", "error"] {
        ids.push(store.put(new_file(&a, ty, Some(t)), body(b"x")).await?.id);
    }
    store.put(new_file(&a, "nmap", None), body(b"yy")).await?;
    store.put(new_file(&b, "nmap", None), body(b"zzz")).await?;
    let mut q = FileQuery::new(a.clone());
    assert_eq!(store.query(&q).await?.count, 5);
    q.file_type = Some("nmap".into());
    assert_eq!(store.query(&q).await?.count, 3);
    q.task = Some(t);
    assert_eq!(store.query(&q).await?.count, 2);
    let mut q = FileQuery::new(a.clone());
    q.ids = Some(vec![ids[0], ids[3]]);
    assert_eq!(store.query(&q).await?.count, 2);
    let mut q = FileQuery::new(a.clone());
    q.search = Some("ERR".into());
    assert_eq!(store.query(&q).await?.count, 1);
    let mut q = FileQuery::new(a.clone());
    q.ordering = Some(Ordering::parse("-id"));
    q.limit = 2;
    let p = store.query(&q).await?;
    assert_eq!(p.count, 5);
    assert_eq!(p.items.len(), 2);
    assert!(p.items[0].id > p.items[1].id);
    q.ordering = Some(Ordering::parse("-size"));
    assert_eq!(store.query(&q).await?.items[0].size, 2);
    q.ordering = Some(Ordering::parse("colour"));
    assert!(store.query(&q).await.is_err());
    assert_eq!(
        store.query(&FileQuery::new(b.clone())).await?.count,
        1,
        "organizations are isolated"
    );
    Ok(())
}

/// Concurrent uploads get distinct ids and keep their contents.
pub async fn concurrent_puts(store: Arc<dyn FileStore>) -> Result<()> {
    let o = org("f-conc");
    let mut handles = Vec::new();
    for i in 0..16u8 {
        let store = store.clone();
        let o = o.clone();
        handles.push(tokio::spawn(async move {
            let data = vec![i; 1000 + usize::from(i)];
            let s: ByteStream =
                Box::pin(futures::stream::iter(vec![Ok(Bytes::from(data.clone()))]));
            let m = store.put(new_file(&o, "c", None), s).await?;
            Ok::<_, Error>((m.id, data))
        }));
    }
    let mut seen = std::collections::BTreeSet::new();
    for h in handles {
        let (id, data) = h
            .await
            .map_err(|e| Error::backend_source("test", e, false))??;
        assert!(seen.insert(id), "duplicate id {id}");
        assert_eq!(read_all(&*store, id).await?, data);
    }
    Ok(())
}

fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A `size`-byte file goes in and out as a stream, byte-exact. When `max_rss_growth` is given, the
/// process's resident memory (sampled while the file goes in and out) must not grow by more than
/// that: the store streams instead of collecting. Returns the largest growth seen.
pub async fn large_file_streams(
    store: &dyn FileStore,
    size: u64,
    max_rss_growth: Option<u64>,
) -> Result<u64> {
    const CHUNK: usize = 256 * 1024;
    let o = org("f-large");
    let baseline = rss_bytes().unwrap_or(0);
    let peak = Arc::new(AtomicU64::new(baseline));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(AtomicOrdering::Relaxed) {
                if let Some(r) = rss_bytes() {
                    peak.fetch_max(r, AtomicOrdering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    // Deterministic, non-repeating-per-chunk content, generated lazily.
    let chunk_of = |i: u64| -> Bytes {
        let mut v = vec![0u8; CHUNK];
        for (j, b) in v.iter_mut().enumerate() {
            *b = (i as usize).wrapping_mul(31).wrapping_add(j) as u8;
        }
        Bytes::from(v)
    };
    let n_chunks = size.div_ceil(CHUNK as u64);
    let mut expected = Sha256::new();
    for i in 0..n_chunks {
        let c = chunk_of(i);
        let len = if i == n_chunks - 1 {
            (size - i * CHUNK as u64) as usize
        } else {
            CHUNK
        };
        expected.update(&c[..len]);
    }
    let expected = hex::encode(expected.finalize());
    let stream: ByteStream = Box::pin(futures::stream::iter(0..n_chunks).map(move |i| {
        let c = chunk_of(i);
        let len = if i == n_chunks - 1 {
            (size - i * CHUNK as u64) as usize
        } else {
            CHUNK
        };
        Ok(c.slice(..len))
    }));
    let m = store.put(new_file(&o, "big", None), stream).await?;
    assert_eq!(m.size, size);
    assert_eq!(m.sha256, expected);
    let mut out = store.open(m.id).await?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(c) = out.next().await {
        let c = c?;
        n += c.len() as u64;
        h.update(&c);
    }
    stop.store(true, AtomicOrdering::Relaxed);
    let _ = sampler.join();
    assert_eq!(n, size);
    assert_eq!(
        hex::encode(h.finalize()),
        expected,
        "contents come back byte-exact"
    );
    store.delete(m.id).await?;
    let growth = peak.load(AtomicOrdering::Relaxed).saturating_sub(baseline);
    if let Some(max) = max_rss_growth {
        assert!(
            growth <= max,
            "memory grew by {growth} bytes moving a {size}-byte file; the store must stream (limit {max})"
        );
    }
    Ok(growth)
}

/// A file keeps the scan level it carries and where that came from, every source and no level alike,
/// in its metadata and in queries.
pub async fn carried_levels_are_kept(store: &dyn FileStore) -> Result<()> {
    let o = org("f-lvl");
    let cases = [
        (ScanLevel::new(0).ok(), LevelSource::NoInputs),
        (ScanLevel::new(1).ok(), LevelSource::Objects),
        (ScanLevel::new(3).ok(), LevelSource::Files),
        (ScanLevel::new(4).ok(), LevelSource::Operator),
        (None, LevelSource::Objects),
        (None, LevelSource::Engine),
    ];
    let mut ids = Vec::new();
    for (level, from) in cases {
        let mut new = new_file(&o, "lvl", None);
        new.scan_level = level;
        new.level_from = from;
        let m = store.put(new, body(b"x")).await?;
        assert_eq!((m.scan_level, m.level_from), (level, from));
        let back = store.meta(m.id).await?.expect("stored");
        assert_eq!((back.scan_level, back.level_from), (level, from));
        ids.push((m.id, level, from));
    }
    let page = store.query(&FileQuery::new(o)).await?;
    assert_eq!(page.items.len(), ids.len());
    for (m, (id, level, from)) in page.items.iter().zip(ids) {
        assert_eq!((m.id, m.scan_level, m.level_from), (id, level, from));
    }
    Ok(())
}

/// Run every case; the large-file case with `large_size` bytes and the memory bound given.
pub async fn run_all(
    store: Arc<dyn FileStore>,
    large_size: u64,
    max_rss_growth: Option<u64>,
) -> Result<()> {
    put_and_read_back(&*store).await?;
    missing_delete_and_errors(&*store).await?;
    queries(&*store).await?;
    carried_levels_are_kept(&*store).await?;
    concurrent_puts(store.clone()).await?;
    large_file_streams(&*store, large_size, max_rss_growth).await?;
    Ok(())
}
