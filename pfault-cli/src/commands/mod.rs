//! One module per subcommand: its flags (a clap `Args` struct that flattens the shared groups
//! of [`crate::args`]), its plan for the kernel side, and how it writes its results.

pub(crate) mod exporter;
pub(crate) mod ffaults;
pub mod pages;
pub(crate) mod probes;
pub(crate) mod stackcount;
pub(crate) mod stat;
pub(crate) mod top;
pub mod trace;
