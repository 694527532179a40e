//! The accept loop: HTTP/1.1 connections on hyper, bounded request heads (size and read time),
//! graceful shutdown.

use std::convert::Infallible;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;

use crate::Api;

pub(crate) async fn serve(
    api: Api,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), kat_core::Error> {
    let mut builder = http1::Builder::new();
    let cfg = api.config().clone();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout.max(Duration::from_millis(1)))
        .max_header_size(cfg.max_header_bytes.max(1024))
        .max_buf_size(cfg.max_header_bytes.max(64 * 1024).max(8192))
        .keep_alive(true);
    if let Some(dir) = &cfg.spool_dir {
        clean_spool(dir).await;
    }
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, "kat-http listening");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let api = api.clone();
                let service = service_fn(move |req| {
                    let api = api.clone();
                    async move { Ok::<_, Infallible>(api.handle(req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("kat-http shutting down");
    match tokio::time::timeout(cfg.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("kat-http stopped"),
        Err(_) => tracing::warn!(
            "kat-http stopped with requests still in flight after {:?}",
            cfg.shutdown_grace
        ),
    }
    Ok(())
}

/// The prefix of spooled uploads' file names in [`crate::ApiConfig::spool_dir`].
pub(crate) const SPOOL_PREFIX: &str = "kat-upload-";

/// Create the spool directory and remove the spooled uploads a previous process left there (killed
/// while an upload was in flight). Other files are left alone; failures are only logged.
async fn clean_spool(dir: &std::path::Path) {
    if let Err(e) = tokio::fs::create_dir_all(dir).await {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create the upload spool directory");
        return;
    }
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read the upload spool directory");
            return;
        }
    };
    let mut removed = 0usize;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let leftover = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(SPOOL_PREFIX));
        if !leftover {
            continue;
        }
        match tokio::fs::remove_file(entry.path()).await {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a leftover spooled upload");
            }
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "removed spooled uploads a previous process left");
    }
}
