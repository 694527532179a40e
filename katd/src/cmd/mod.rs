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

/// The operator's privilege policy of `--policy` / `KAT_POLICY`; none (or an empty path) grants
/// nothing beyond the hardened default.
pub(crate) fn load_policy(path: Option<&Path>) -> Result<Policy, Error> {
    match path.filter(|p| !p.as_os_str().is_empty()) {
        None => Ok(Policy::default()),
        Some(p) => Policy::load(p),
    }
}
