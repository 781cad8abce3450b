//! The command line: subcommands in the conventions of bcc, bpftrace and perf.

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

use crate::commands::{
    exporter::{self, ExporterArgs},
    ffaults::{self, FfaultsArgs},
    pages::{self, PagesArgs},
    probes,
    stackcount::{self, StackcountArgs},
    stat::{self, StatArgs},
    top::{self, TopArgs},
    trace::{self, TraceArgs},
};

#[derive(Parser, Debug)]
#[command(
    name = "pfault",
    version,
    about = "Page-fault tracer for Linux on eBPF: who faults, where, on what, how long"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// One line per page fault: address, access, kind, latency, mapping, stacks
    Trace(TraceArgs),
    /// Fault counts per stack, counted in the kernel; folded stacks and flame graphs
    Stackcount(StackcountArgs),
    /// Faults per file (or [anon]/[heap]/[stack]), minor and major apart, counted in the kernel
    Ffaults(FfaultsArgs),
    /// Fault counts, rates and latency percentiles per process or thread (perf stat, with more)
    Stat(StatArgs),
    /// A live view of the processes faulting most; q quits
    Top(TopArgs),
    /// Serve fault counts to Prometheus (/metrics) and fault profiles to pprof scrapers
    /// (/debug/pprof/faults) until stopped
    Exporter(ExporterArgs),
    /// What a process's resident pages are: flags from /proc/kpageflags, like page-types -p
    Pages(PagesArgs),
    /// What this kernel offers (BTF, kprobes, fentry, tracefs, ring buffer) and which probe mode the tools use
    Probes,
    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    Man,
}

impl Command {
    /// Runs the subcommand: pfault's exit status, when it passes on a command's.
    pub(crate) async fn run(self) -> Result<Option<i32>> {
        match self {
            Command::Trace(args) => trace::run(args).await,
            Command::Stackcount(args) => stackcount::run(args).await,
            Command::Ffaults(args) => ffaults::run(args).await,
            Command::Stat(args) => stat::run(args).await,
            Command::Top(args) => top::run(args).await,
            Command::Exporter(args) => exporter::run(args).await,
            Command::Pages(args) => pages::run(args),
            Command::Probes => probes::run(),
            Command::Completions { shell } => completions(shell),
            Command::Man => man(),
        }
    }

    /// Whether it attaches probes, and so must tidy up when a signal stops it.
    pub(crate) fn traces(&self) -> bool {
        !matches!(
            self,
            Command::Pages(_) | Command::Probes | Command::Completions { .. } | Command::Man
        )
    }
}

pub(crate) fn completions(shell: clap_complete::Shell) -> Result<Option<i32>> {
    clap_complete::generate(shell, &mut Cli::command(), "pfault", &mut std::io::stdout());
    Ok(None)
}

pub(crate) fn man() -> Result<Option<i32>> {
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_tracing_tool_takes_all_processes() {
        for tool in ["trace", "stackcount", "ffaults", "stat", "top"] {
            Cli::try_parse_from(["pfault", tool, "-a"]).unwrap_or_else(|e| panic!("{tool} -a: {e}"));
        }
    }
}
