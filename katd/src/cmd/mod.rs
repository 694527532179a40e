//! One module per subcommand, each with a `run` that takes its arguments (defined with the command line in
//! `main.rs`) and prints what the subcommand prints.

pub(crate) mod declare;
pub(crate) mod files;
pub(crate) mod objects;
pub(crate) mod plan;
pub(crate) mod report;
pub(crate) mod run;
pub(crate) mod serve;
pub(crate) mod sync;
pub(crate) mod tasks;
pub(crate) mod token;
