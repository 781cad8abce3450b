//! pfault: a page-fault tracer for Linux on eBPF. This file only parses the command line,
//! dispatches to one module per subcommand, and turns errors into one line on stderr.

mod agg;
mod btf;
mod cli;
mod ffaults;
mod mappings;
mod output;
mod pages;
mod probes;
mod probes_cmd;
mod session;
mod stackcount;
mod stat;
mod symbolize;
mod top;
mod trace;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pfault: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Trace(args) => trace::run(args).await,
            Command::Stackcount(args) => stackcount::run(args).await,
            Command::Ffaults(args) => ffaults::run(args).await,
            Command::Stat(args) => stat::run(args).await,
            Command::Top(args) => top::run(args).await,
            Command::Pages(args) => pages::run(args),
            Command::Probes => probes_cmd::run(),
            Command::Completions { shell } => cli::completions(shell),
            Command::Man => cli::man(),
        }
    });
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

/// `pfault trace | head` ends quietly, as other command-line tools do.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
