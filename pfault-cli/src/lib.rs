//! pfault: a page-fault tracer for Linux on eBPF, as a library behind a thin binary.
//!
//! One module per subcommand under [`commands`], named as on the command line; [`cli`] lists
//! them; [`args`] holds the flag groups they share. [`engine`] loads and attaches the kernel
//! side; [`session`] runs a trace; [`symbolize`] and [`mappings`] name what the kernel saw;
//! [`output`] writes each format.

pub(crate) mod args;
pub mod btf;
pub(crate) mod cgroup;
pub(crate) mod cli;
pub mod commands;
pub(crate) mod engine;
pub(crate) mod held;
pub(crate) mod mappings;
pub mod output;
pub(crate) mod perfmap;
pub mod procfs;
pub mod records;
pub(crate) mod session;
pub(crate) mod signals;
pub(crate) mod stacks;
pub(crate) mod symbolize;
pub(crate) mod unwind;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;

/// Parses the command line, runs the subcommand, and turns an error into one line on stderr.
pub fn main() -> ExitCode {
    signals::catch();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return refused(e),
    };
    if !cli.command.traces() {
        signals::uncatch();
    }
    procfs::raise_open_files_limit();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pfault: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(cli.command.run());
    if let Some(&signals::Interrupted(sig)) = result.as_ref().err().and_then(|e| e.downcast_ref()) {
        // Everything start-up made is gone by now (a held command killed, probes detached).
        drop(rt);
        signals::die_of(sig);
    }
    match result {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(code)) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pfault: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A value a flag refused is one line, as every other bad input is; help, the version and
/// the other usage errors print as clap prints them. Exit status 2, as clap's.
fn refused(e: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let said = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.as_str()),
        _ => None,
    };
    let reason = std::error::Error::source(&e);
    match (
        e.kind(),
        said(ContextKind::InvalidArg),
        said(ContextKind::InvalidValue),
        reason,
    ) {
        (ErrorKind::ValueValidation, Some(flag), Some(value), Some(reason)) => {
            eprintln!("pfault: invalid value '{value}' for {flag}: {reason}");
            ExitCode::from(2)
        }
        _ => e.exit(),
    }
}

/// `pfault trace | head` ends quietly, as other command-line tools do.
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
