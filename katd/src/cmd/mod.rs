//! One module per subcommand, each with a `run` that takes its arguments (defined with the command line in
//! `main.rs`) and prints what the subcommand prints.

pub(crate) mod declare;
pub(crate) mod files;
pub(crate) mod levels;
pub(crate) mod objects;
pub(crate) mod plan;
pub(crate) mod report;
pub(crate) mod rules;
pub(crate) mod run;
pub(crate) mod serve;
pub(crate) mod status;
pub(crate) mod sync;
pub(crate) mod tasks;
pub(crate) mod token;

use std::path::Path;

use kat::core::Error;
use kat::core::policy::Policy;
use kat::deploy::StoreChoice;

/// The operator's privilege policy of `--policy` / `KAT_POLICY`; none (or an empty path) grants
/// nothing beyond the hardened default.
pub(crate) fn load_policy(path: Option<&Path>) -> Result<Policy, Error> {
    match path.filter(|p| !p.as_os_str().is_empty()) {
        None => Ok(Policy::default()),
        Some(p) => Policy::load(p),
    }
}

/// The most `--sled-cache-mib` accepts: 1 TiB.
const SLED_CACHE_MAX_MIB: u64 = 1 << 20;

/// `--sled-cache-mib` / `KAT_SLED_CACHE_MIB` (`serve`, `rules run --data`): unset or empty, sled's
/// default; a whole number of MiB from 1 to 1 TiB, and only with the sled store.
pub(crate) fn sled_cache_mib(
    value: Option<&str>,
    store: &StoreChoice,
) -> Result<Option<u64>, Error> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let bad = |why: String| Error::invalid("--sled-cache-mib", why);
    if !matches!(store, StoreChoice::Sled(_)) {
        return Err(bad(format!(
            "{v:?} sizes the sled store's cache, and this deployment's store is not sled"
        )));
    }
    match v.parse::<u64>() {
        Ok(n) if (1..=SLED_CACHE_MAX_MIB).contains(&n) => Ok(Some(n)),
        _ => Err(bad(format!(
            "{v:?} is not a whole number of MiB from 1 to {SLED_CACHE_MAX_MIB}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sled_cache_is_a_whole_number_of_mib_for_the_sled_store_only() {
        let sled = StoreChoice::Sled("/srv/kat".into());
        assert_eq!(sled_cache_mib(None, &sled).ok(), Some(None));
        assert_eq!(sled_cache_mib(Some(" "), &sled).ok(), Some(None));
        assert_eq!(sled_cache_mib(Some("1024"), &sled).ok(), Some(Some(1024)));
        for bad in ["0", "-1", "1.5", "1GiB", "1048577"] {
            let e = sled_cache_mib(Some(bad), &sled).expect_err(bad).to_string();
            assert!(
                e.contains("--sled-cache-mib") && e.contains(&format!("{bad:?}")),
                "{e}"
            );
        }
        let e = sled_cache_mib(Some("512"), &StoreChoice::Memory)
            .expect_err("memory")
            .to_string();
        assert!(e.contains("not sled"), "{e}");
    }
}
