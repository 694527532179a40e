//! The [`TokenAuthority`] conformance suite: what every authority must accept and refuse.

use crate::clock::Timestamp;
use crate::org::OrgCode;
use crate::permission::{Permissions, Scope};
use crate::task::TaskId;
use crate::token::{Claims, TokenAuthority};
use crate::{Error, Result};

fn claims(now: Timestamp) -> Claims {
    let mut p = Permissions::new();
    p.grant(
        "files.add_file".parse().expect("valid"),
        Scope::unrestricted(),
    );
    p.grant("files.view_file".parse().expect("valid"), Scope::pks(["7"]));
    Claims::for_task(
        TaskId::new(),
        OrgCode::new("tok").expect("valid"),
        "dns",
        p,
        now,
        now.plus_secs(600),
    )
}

async fn refused(auth: &dyn TokenAuthority, token: &str, why: &str) -> Result<()> {
    match auth.verify(token).await {
        Err(Error::Unauthenticated(_)) => Ok(()),
        Err(e) => panic!("{why}: expected Unauthenticated, got {e}"),
        Ok(c) => panic!("{why}: a bad token was accepted: {c:?}"),
    }
}

/// A minted token verifies to the same claims.
pub async fn round_trip(auth: &dyn TokenAuthority) -> Result<()> {
    let c = claims(Timestamp::now());
    let t = auth.mint(&c)?;
    assert_eq!(auth.verify(&t).await?, c);
    Ok(())
}

/// Tampering, garbage, expiry, not-yet-valid, the wrong audience and revocation are all refused.
pub async fn refusals(auth: &dyn TokenAuthority) -> Result<()> {
    let now = Timestamp::now();
    let good = auth.mint(&claims(now))?;
    for junk in ["", "abc", "a.b.c", "....", &"x".repeat(100_000)] {
        refused(auth, junk, "garbage").await?;
    }
    // Flip one character of the payload and of the signature.
    let parts: Vec<&str> = good.split('.').collect();
    if parts.len() == 3 {
        let flip = |s: &str| -> String {
            let mut b = s.as_bytes().to_vec();
            let i = b.len() / 2;
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            String::from_utf8(b).unwrap_or_default()
        };
        refused(
            auth,
            &format!("{}.{}.{}", parts[0], flip(parts[1]), parts[2]),
            "tampered payload",
        )
        .await?;
        refused(
            auth,
            &format!("{}.{}.{}", parts[0], parts[1], flip(parts[2])),
            "tampered signature",
        )
        .await?;
    }
    let mut expired = claims(now.plus_secs(-7200));
    expired.exp = now.as_secs() - 3600;
    refused(auth, &auth.mint(&expired)?, "expired").await?;
    let mut early = claims(now);
    early.nbf = now.as_secs() + 3600;
    refused(auth, &auth.mint(&early)?, "not yet valid").await?;
    let mut aud = claims(now);
    aud.aud = "someone-else".into();
    refused(auth, &auth.mint(&aud)?, "wrong audience").await?;
    let c = claims(now);
    let t = auth.mint(&c)?;
    assert!(auth.verify(&t).await.is_ok());
    auth.revoke(&c.jti, c.exp).await?;
    refused(auth, &t, "revoked").await?;
    assert!(
        auth.verify(&good).await.is_ok(),
        "revoking one token leaves others valid"
    );
    Ok(())
}

/// Run every case.
pub async fn run_all(auth: &dyn TokenAuthority) -> Result<()> {
    round_trip(auth).await?;
    refusals(auth).await?;
    Ok(())
}
