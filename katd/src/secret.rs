//! The JWT secret that `serve` signs tokens with and `token` mints them with, and files only their
//! owner may read (the secret, an operator token).

use std::path::Path;

use kat::core::Error;

/// Write `bytes` to `path`, readable and writable by its owner only (mode 0600).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    Ok(())
}

/// The JWT secret: `KAT_JWT_SECRET`, else the file `KAT_JWT_SECRET_FILE`, else `<data>/jwt.secret`
/// (created with 32 random bytes, mode 0600, on first use).
pub(crate) fn load_or_create_secret(data: Option<&Path>) -> Result<Vec<u8>, Error> {
    if let Ok(s) = std::env::var("KAT_JWT_SECRET")
        && !s.is_empty()
    {
        return Ok(s.into_bytes());
    }
    if let Ok(p) = std::env::var("KAT_JWT_SECRET_FILE")
        && !p.is_empty()
    {
        return std::fs::read(&p)
            .map_err(|e| Error::invalid("KAT_JWT_SECRET_FILE", format!("cannot read {p}: {e}")));
    }
    let data = data.ok_or_else(|| {
        Error::invalid(
            "--data",
            "give --data (for its jwt.secret) or set KAT_JWT_SECRET",
        )
    })?;
    let path = data.join("jwt.secret");
    match std::fs::read(&path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data)?;
            let secret = new_secret();
            write_private(&path, &secret)?;
            Ok(secret)
        }
        Err(e) => Err(Error::invalid(
            "--data",
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// 64 hex digits from two random UUIDs (244 random bits).
fn new_secret() -> Vec<u8> {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
    .into_bytes()
}
