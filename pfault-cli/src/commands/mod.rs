//! One module per subcommand: its flags (a clap `Args` struct that flattens the shared groups
//! of [`crate::args`]), its plan for the kernel side, and how it writes its results.

pub mod exporter;
pub mod ffaults;
pub mod pages;
pub mod probes;
pub mod stackcount;
pub mod stat;
pub mod top;
pub mod trace;
