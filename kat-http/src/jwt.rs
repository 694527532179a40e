//! [`JwtAuthority`]: the [`TokenAuthority`] on JSON Web Tokens, and [`mint_operator_token`] for people.
//!
//! The verifier fixes the algorithm (HS256 or EdDSA) when it is built; the token's header never chooses
//! it. `alg: none`, a token signed with the other algorithm (HS256 ↔ EdDSA key confusion), `kid` or
//! `jku` tricks, `crit` extensions, a missing or mistyped claim, an unknown claim, the wrong audience or
//! issuer, an expired or not-yet-valid token, a revoked `jti` and anything larger than
//! [`MAX_TOKEN_BYTES`] are all refused with [`Error::Unauthenticated`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use kat_core::clock::Timestamp;
use kat_core::org::OrgCode;
use kat_core::permission::{PermissionName, Permissions, Scope};
use kat_core::store::RevocationList;
use kat_core::token::{AUDIENCE, Claims, ISSUER, TokenAuthority};
use kat_core::{Error, Result};

/// What the JWT authority's own operations report, kept as the source of the [`Error`] they
/// become.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// jsonwebtoken could not sign a token.
    #[error("cannot sign a token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// Tokens longer than this (in bytes) are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// The shortest HS256 secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// How many verified tokens a [`JwtAuthority`] remembers by default (see
/// [`JwtAuthority::with_cache_capacity`]).
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;

/// The longest lifetime [`mint_operator_token`] accepts.
pub const MAX_OPERATOR_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// Every claim of [`Claims`]: each must be present on the wire (`task_id` and `plugin_id` may be
/// `null`, nothing else may).
const CLAIM_NAMES: [&str; 11] = [
    "iss",
    "aud",
    "sub",
    "task_id",
    "org",
    "plugin_id",
    "permissions",
    "iat",
    "nbf",
    "exp",
    "jti",
];

/// Header parameters that would ask the verifier to fetch or trust keys, or to understand
/// extensions; a token carrying any of them is refused.
const REFUSED_HEADER_PARAMS: [&str; 5] = ["crit", "jku", "jwk", "x5u", "x5c"];

/// A [`TokenAuthority`] signing and verifying JWTs with one fixed algorithm, HS256 (a shared secret)
/// or EdDSA (an Ed25519 key pair), and a denylist of revoked token ids kept in a [`RevocationList`]
/// (any [`TaskStore`](kat_core::store::TaskStore) is one).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use kat_core::{clock::Timestamp, memory::MemoryTaskStore, org::OrgCode, permission::Permissions};
/// use kat_core::token::{Claims, TokenAuthority};
/// use kat_http::JwtAuthority;
///
/// let auth = JwtAuthority::hs256(&[7u8; 32], Arc::new(MemoryTaskStore::default()))?;
/// let claims = Claims::for_user("ops", OrgCode::new("acme")?, Permissions::new(), Timestamp::now(), 600);
/// let token = auth.mint(&claims)?;
/// assert_eq!(auth.verify(&token).await?, claims);
/// assert!(JwtAuthority::hs256(b"too short", Arc::new(MemoryTaskStore::default())).is_err());
/// # Ok::<(), kat_core::Error>(())
/// # }).unwrap();
/// ```
pub struct JwtAuthority {
    alg: Algorithm,
    alg_name: &'static str,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    denylist: Arc<dyn RevocationList>,
    /// Tokens whose signature and claims were verified, by the whole token text; see
    /// [`JwtAuthority::with_cache_capacity`].
    verified: Mutex<HashMap<Box<str>, Claims>>,
    cache_capacity: usize,
}

impl fmt::Debug for JwtAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthority")
            .field("alg", &self.alg_name)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn config_error(message: impl Into<String>) -> Error {
    Error::invalid("jwt", message)
}

impl JwtAuthority {
    fn build(
        alg: Algorithm,
        alg_name: &'static str,
        encoding: EncodingKey,
        decoding: DecodingKey,
        denylist: Arc<dyn RevocationList>,
    ) -> Result<Self> {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        let auth = JwtAuthority {
            alg,
            alg_name,
            encoding,
            decoding,
            validation,
            issuer: ISSUER.to_string(),
            denylist,
            verified: Mutex::new(HashMap::new()),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
        };
        auth.self_test()?;
        Ok(auth)
    }

    /// Sign and verify a probe, so that a mismatched key pair fails at start-up, not per request.
    fn self_test(&self) -> Result<()> {
        let probe = Claims::for_user(
            "self-test",
            OrgCode::new("self-test")?,
            Permissions::new(),
            Timestamp::now(),
            60,
        );
        let token = self.mint(&probe)?;
        match self.decode(&token) {
            Ok(c) if c == probe => Ok(()),
            _ => Err(config_error(
                "the signing key and the verifying key do not belong together",
            )),
        }
    }

    /// HS256 with a shared secret of at least [`MIN_SECRET_BYTES`] bytes.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a short secret.
    pub fn hs256(secret: &[u8], denylist: Arc<dyn RevocationList>) -> Result<Self> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(config_error(format!(
                "an HS256 secret needs at least {MIN_SECRET_BYTES} bytes, got {}",
                secret.len()
            )));
        }
        Self::build(
            Algorithm::HS256,
            "HS256",
            EncodingKey::from_secret(secret),
            DecodingKey::from_secret(secret),
            denylist,
        )
    }

    /// EdDSA (Ed25519) with a PKCS#8 private key and its SPKI public key, both PEM
    /// (`openssl genpkey -algorithm ed25519`, `openssl pkey -pubout`).
    ///
    /// # Errors
    /// [`Error::Invalid`] for unreadable keys or a private key that does not match the public one.
    pub fn ed25519(
        private_pem: &[u8],
        public_pem: &[u8],
        denylist: Arc<dyn RevocationList>,
    ) -> Result<Self> {
        let encoding = EncodingKey::from_ed_pem(private_pem)
            .map_err(|e| config_error(format!("unreadable Ed25519 private key: {e}")))?;
        let decoding = DecodingKey::from_ed_pem(public_pem)
            .map_err(|e| config_error(format!("unreadable Ed25519 public key: {e}")))?;
        Self::build(Algorithm::EdDSA, "EdDSA", encoding, decoding, denylist)
    }

    /// From the environment:
    /// - `KAT_JWT_SECRET` (the secret itself) or `KAT_JWT_SECRET_FILE` (a file holding it; one trailing
    ///   newline is ignored): HS256;
    /// - or `KAT_JWT_PRIVATE_KEY_FILE` and `KAT_JWT_PUBLIC_KEY_FILE` (PEM files): EdDSA.
    ///
    /// Exactly one of these choices must be made.
    ///
    /// # Errors
    /// [`Error::Invalid`] when none or several are set, a file is unreadable or a key is unusable.
    pub fn from_env(denylist: Arc<dyn RevocationList>) -> Result<Self> {
        let var = |n: &str| std::env::var_os(n).filter(|v| !v.is_empty());
        let secret = var("KAT_JWT_SECRET");
        let secret_file = var("KAT_JWT_SECRET_FILE");
        let private = var("KAT_JWT_PRIVATE_KEY_FILE");
        let public = var("KAT_JWT_PUBLIC_KEY_FILE");
        let read = |name: &str, path: &std::ffi::OsStr| -> Result<Vec<u8>> {
            std::fs::read(path)
                .map_err(|e| config_error(format!("{name}: cannot read the file: {e}")))
        };
        let choices = usize::from(secret.is_some())
            + usize::from(secret_file.is_some())
            + usize::from(private.is_some() || public.is_some());
        if choices != 1 {
            return Err(config_error(
                "set exactly one of KAT_JWT_SECRET, KAT_JWT_SECRET_FILE, or KAT_JWT_PRIVATE_KEY_FILE with KAT_JWT_PUBLIC_KEY_FILE",
            ));
        }
        if let Some(s) = secret {
            let s = s
                .into_string()
                .map_err(|_| config_error("KAT_JWT_SECRET is not valid UTF-8"))?;
            return Self::hs256(s.as_bytes(), denylist);
        }
        if let Some(path) = secret_file {
            let mut bytes = read("KAT_JWT_SECRET_FILE", &path)?;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
            }
            return Self::hs256(&bytes, denylist);
        }
        match (private, public) {
            (Some(p), Some(q)) => Self::ed25519(
                &read("KAT_JWT_PRIVATE_KEY_FILE", &p)?,
                &read("KAT_JWT_PUBLIC_KEY_FILE", &q)?,
                denylist,
            ),
            _ => Err(config_error(
                "EdDSA needs both KAT_JWT_PRIVATE_KEY_FILE and KAT_JWT_PUBLIC_KEY_FILE",
            )),
        }
    }

    /// Remember up to `capacity` verified tokens (0: none; [`DEFAULT_CACHE_CAPACITY`] unless set).
    ///
    /// A token seen before skips the signature check and the parsing of its claims; everything
    /// that can change while it lives is still checked on every use: its time window (`exp`, `nbf`,
    /// `iat`, with [`LEEWAY_SECS`]) against the clock, and its `jti` against the
    /// [`RevocationList`], so a revoked token is refused on its next use whether it was cached or
    /// not. The key is the whole token text: a token that differs in any byte is verified in full.
    /// An expired entry is dropped when it is next used; when the cache is full, expired entries
    /// are dropped first, and if none expired the cache starts again empty.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use kat_core::{clock::Timestamp, memory::MemoryTaskStore, org::OrgCode, permission::Permissions};
    /// use kat_core::token::{Claims, TokenAuthority};
    /// use kat_http::JwtAuthority;
    ///
    /// let auth = JwtAuthority::hs256(&[7u8; 32], Arc::new(MemoryTaskStore::default()))?.with_cache_capacity(100);
    /// let claims = Claims::for_user("ops", OrgCode::new("acme")?, Permissions::new(), Timestamp::now(), 600);
    /// let token = auth.mint(&claims)?;
    /// assert_eq!(auth.verify(&token).await?, claims);
    /// assert_eq!(auth.verify(&token).await?, claims); // from the cache
    /// auth.revoke(&claims.jti, claims.exp).await?;
    /// assert!(auth.verify(&token).await.is_err()); // revoked: refused at once
    /// # Ok::<(), kat_core::Error>(())
    /// # }).unwrap();
    /// ```
    #[must_use]
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// The algorithm this authority signs and accepts (`HS256` or `EdDSA`).
    pub fn algorithm(&self) -> &'static str {
        self.alg_name
    }

    /// Everything but the denylist: size, shape, header, signature, registered claims, every claim
    /// present and well-typed.
    fn decode(&self, token: &str) -> std::result::Result<Claims, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!("token larger than {MAX_TOKEN_BYTES} bytes"));
        }
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err("not a compact JWS (unexpected characters)".into());
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a compact JWS (expected three parts)".into());
        };
        self.check_header(header)?;
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &self.validation)
                .map_err(|e| format!("{e}"))?;
        let map = data.claims;
        for name in CLAIM_NAMES {
            match map.get(name) {
                None => return Err(format!("claim {name:?} is missing")),
                Some(Value::Null) if name != "task_id" && name != "plugin_id" => {
                    return Err(format!("claim {name:?} is null"));
                }
                _ => {}
            }
        }
        let claims: Claims = serde_json::from_value(Value::Object(map))
            .map_err(|e| format!("malformed claims: {e}"))?;
        if claims.iss != self.issuer || claims.aud != AUDIENCE {
            return Err("wrong issuer or audience".into());
        }
        match claims.task_id {
            Some(t) if claims.sub != format!("task:{t}") => {
                return Err("sub does not name the token's task".into());
            }
            None if !claims.sub.starts_with("user:") => {
                return Err("a token without a task must have a user subject".into());
            }
            _ => {}
        }
        if claims.jti.is_empty() || claims.jti.len() > 128 {
            return Err("jti must be 1 to 128 characters".into());
        }
        if !in_time(&claims, Timestamp::now().as_secs()) {
            return Err("token is expired or not yet valid".into());
        }
        Ok(claims)
    }

    /// The claims of a token verified before and still within its time window, if cached.
    fn cached(&self, token: &str) -> Option<Claims> {
        if self.cache_capacity == 0 {
            return None;
        }
        let mut cache = self.verified.lock().ok()?;
        let claims = cache.get(token)?;
        if in_time(claims, Timestamp::now().as_secs()) {
            return Some(claims.clone());
        }
        cache.remove(token);
        None
    }

    /// Remember a token that was just verified in full.
    fn remember(&self, token: &str, claims: &Claims) {
        if self.cache_capacity == 0 {
            return;
        }
        let Ok(mut cache) = self.verified.lock() else {
            return;
        };
        if cache.len() >= self.cache_capacity {
            let now = Timestamp::now().as_secs();
            cache.retain(|_, c| in_time(c, now));
            if cache.len() >= self.cache_capacity {
                cache.clear();
            }
        }
        cache.insert(token.into(), claims.clone());
    }

    fn check_header(&self, header_b64: &str) -> std::result::Result<(), String> {
        if header_b64.len() > 1024 {
            return Err("header too large".into());
        }
        let raw = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| "header is not base64url".to_string())?;
        let header: Map<String, Value> =
            serde_json::from_slice(&raw).map_err(|_| "header is not a JSON object".to_string())?;
        match header.get("alg") {
            Some(Value::String(a)) if a == self.alg_name => {}
            _ => return Err(format!("algorithm must be {}", self.alg_name)),
        }
        if let Some(p) = REFUSED_HEADER_PARAMS
            .iter()
            .find(|p| header.contains_key(**p))
        {
            return Err(format!("header parameter {p:?} is not accepted"));
        }
        match header.get("typ") {
            None => Ok(()),
            Some(Value::String(t)) if t.eq_ignore_ascii_case("JWT") => Ok(()),
            Some(_) => Err("typ must be JWT".into()),
        }
    }
}

#[async_trait]
impl TokenAuthority for JwtAuthority {
    fn mint(&self, claims: &Claims) -> Result<String> {
        jsonwebtoken::encode(&Header::new(self.alg), claims, &self.encoding)
            .map_err(|e| Error::backend_source("jwt", JwtError::Sign(e), false))
    }

    async fn verify(&self, token: &str) -> Result<Claims> {
        let (claims, fresh) = match self.cached(token) {
            Some(c) => (c, false),
            None => (self.decode(token).map_err(Error::Unauthenticated)?, true),
        };
        // On every use, cached or not. Fail closed: a denylist that cannot be read is an error,
        // never a pass.
        if self.denylist.is_token_revoked(&claims.jti).await? {
            return Err(Error::Unauthenticated("token revoked".into()));
        }
        if fresh {
            self.remember(token, &claims);
        }
        Ok(claims)
    }

    async fn revoke(&self, jti: &str, exp: i64) -> Result<()> {
        self.denylist.revoke_token(jti, exp).await
    }
}

/// Whether `now` (unix seconds) is within the token's time window, with [`LEEWAY_SECS`].
fn in_time(claims: &Claims, now: i64) -> bool {
    let leeway = LEEWAY_SECS as i64;
    claims.exp >= now - leeway && claims.nbf <= now + leeway && claims.iat <= now + leeway
}

/// Every permission, unrestricted: what an operator's token usually carries.
pub fn all_permissions() -> Permissions {
    let mut p = Permissions::new();
    for name in PermissionName::all() {
        p.grant(name, Scope::unrestricted());
    }
    p
}

/// Mint a token for a person or a program (`katd token`), so that the API can be used with curl:
/// subject `user:<user>`, no task, valid for `ttl` (1 second to [`MAX_OPERATOR_TTL`]).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::{sync::Arc, time::Duration};
/// use kat_core::{memory::MemoryTaskStore, org::OrgCode, token::TokenAuthority};
/// use kat_http::{all_permissions, mint_operator_token, JwtAuthority};
///
/// let auth = JwtAuthority::hs256(&[1u8; 32], Arc::new(MemoryTaskStore::default()))?;
/// let token = mint_operator_token(&auth, "alice", OrgCode::new("acme")?, all_permissions(), Duration::from_secs(3600))?;
/// let claims = auth.verify(&token).await?;
/// assert_eq!(claims.sub, "user:alice");
/// assert!(claims.task_id.is_none());
/// # Ok::<(), kat_core::Error>(())
/// # }).unwrap();
/// ```
///
/// # Errors
/// [`Error::Invalid`] for an empty or over-long user name or a lifetime out of range; signing errors.
pub fn mint_operator_token(
    authority: &dyn TokenAuthority,
    user: &str,
    org: OrgCode,
    permissions: Permissions,
    ttl: Duration,
) -> Result<String> {
    if user.is_empty() || user.len() > 64 || user.chars().any(char::is_control) {
        return Err(Error::invalid(
            "user",
            "a user name is 1 to 64 printable characters",
        ));
    }
    if ttl.as_secs() == 0 || ttl > MAX_OPERATOR_TTL {
        return Err(Error::invalid(
            "ttl",
            format!(
                "a token lives from 1 second to {} days",
                MAX_OPERATOR_TTL.as_secs() / 86_400
            ),
        ));
    }
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let claims = Claims::for_user(user, org, permissions, Timestamp::now(), ttl);
    authority.mint(&claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key jsonwebtoken cannot sign with fails start-up with a backend error whose source chain
    /// reaches jsonwebtoken's error.
    #[test]
    fn a_signing_failure_keeps_its_cause() {
        use std::error::Error as _;
        let e = JwtAuthority::build(
            Algorithm::EdDSA,
            "EdDSA",
            EncodingKey::from_ed_der(&[0u8; 3]),
            DecodingKey::from_ed_der(&[0u8; 3]),
            Arc::new(kat_core::memory::MemoryTaskStore::default()),
        )
        .expect_err("a three-byte key cannot sign");
        assert!(
            e.to_string().starts_with("jwt: cannot sign a token: "),
            "{e}"
        );
        let sign = e
            .source()
            .and_then(|s| s.downcast_ref::<JwtError>())
            .expect("the JwtError");
        assert!(
            sign.source()
                .is_some_and(|s| s.is::<jsonwebtoken::errors::Error>())
        );
    }
}
