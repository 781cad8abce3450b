//! pfault's tasks (`cargo xtask --help`).
//!
//! Each task installs what it needs on a fresh machine (rust-src for nightly, bpf-linker
//! built against the nightly toolchain's own LLVM, tracefs mounted) and says so.

mod artifacts;
mod bench;
mod bench_pages;
mod ebpf;
mod shell;
mod toolchain;
mod vm;

use std::{path::Path, process::Command};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use crate::{
    artifacts::build_pfault,
    shell::{cargo, say, sh},
};

#[derive(Parser)]
#[command(bin_name = "cargo xtask", about = "pfault's build, test and benchmark tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build pfault (and the eBPF object, if its sources changed) and run it as root.
    Run {
        /// pfault's arguments, after `--`: `cargo xtask run -- trace -p 1234`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The whole suite, as CI runs it: lints, unit and end-to-end tests, then the VM test.
    Test,
    /// Rebuild the committed eBPF object (pfault-cli/bpf/pfault.bpf.o) from pfault-ebpf.
    BuildEbpf,
    /// pfault side by side with bpftrace and perf on the same jobs; writes target/bench/results.md.
    Bench,
    /// Run a command to completion and print its wall seconds and peak RSS in KiB (bench's
    /// start-up figures, measured from a fresh, small process).
    #[command(name = bench::PEAK_RSS, hide = true)]
    PeakRss {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        argv: Vec<String>,
    },
    /// pfault on Debian's kernels under qemu, in every probe mode each kernel offers.
    VmTest(vm::Args),
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().task {
        Task::Run { args } => run(&args),
        Task::Test => test(),
        Task::BuildEbpf => ebpf::build_ebpf(),
        Task::Bench => bench::run(),
        Task::PeakRss { argv } => bench::peak_rss(&argv),
        Task::VmTest(args) => vm::run(&args),
    }
}

fn run(args: &[String]) -> Result<()> {
    if !ebpf::object_is_fresh()? {
        say("pfault-ebpf changed since the committed object was built: rebuilding it");
        ebpf::build_ebpf()?;
    }
    toolchain::ensure_tracefs()?;
    let bin = build_pfault()?;
    let status = Command::new(bin).args(args).status()?;
    std::process::exit(status.code().unwrap_or(1));
}

fn test() -> Result<()> {
    // The committed object is what users get: it must match the sources.
    if !ebpf::object_is_fresh()? {
        bail!("the eBPF objects in pfault-cli/bpf are stale against pfault-ebpf/pfault-common: run `cargo xtask build-ebpf` and commit the result");
    }
    // And the sources must still build with the toolchain this machine can install.
    for (_, features) in ebpf::OBJECTS {
        ebpf::compile_ebpf(features)?;
    }
    toolchain::ensure_tracefs()?;
    // The tests use the clients a user would: `pfault top` in a real terminal, pprof
    // profiles in `go tool pprof`; JIT frames are named on node's code and compared with
    // perf's names (CPython 3.12 comes from pyenv: Debian 12's python3 is 3.11).
    toolchain::ensure_packages(&[
        ("tmux", "tmux"),
        ("go", "golang-go"),
        ("prometheus", "prometheus"),
        ("node", "nodejs"),
        ("perf", "linux-perf"),
    ])?;
    say("checking format and lints");
    sh(cargo().args(["fmt", "--all", "--check"]))?;
    // The host crates with stable; the kernel crate with nightly for its own target.
    sh(cargo().args(["clippy", "--quiet", "--all-targets", "--", "-D", "warnings"]))?;
    ebpf::clippy()?;
    let bin = build_pfault()?;
    say("running unit and end-to-end tests (the e2e tests load pfault's programs into this kernel)");
    let (passed, failed) = cargo_test(&bin)?;
    if failed > 0 {
        println!("tests: {passed} passed, {failed} failed");
        bail!("{failed} tests failed");
    }
    if std::env::var_os("PFAULT_SKIP_VM").is_none() {
        vm::run(&vm::Args::default())?;
    }
    println!("tests: {passed} passed, {failed} failed");
    Ok(())
}

/// Runs the test suites (no doc-tests: there are none) echoing their output, and adds up
/// their `test result:` lines for one closing line.
fn cargo_test(bin: &Path) -> Result<(u64, u64)> {
    let mut child = cargo()
        .env("PFAULT_BIN", bin)
        .args([
            "test",
            "--release",
            "--no-fail-fast",
            "--lib",
            "--bins",
            "--tests",
            "--",
            "--test-threads=1",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let (mut passed, mut failed) = (0, 0);
    for line in std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap())) {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |what: &str| -> u64 {
                rest.split([';', '.'])
                    .find_map(|part| part.trim().strip_suffix(what).and_then(|n| n.trim().parse().ok()))
                    .unwrap_or(0)
            };
            passed += count(" passed");
            failed += count(" failed");
        }
    }
    let status = child.wait()?;
    if !status.success() && failed == 0 {
        bail!("cargo test failed ({status}) before reporting a failed test");
    }
    Ok((passed, failed))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Task};

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// What follows `run --` (or `peak-rss`) is the command's, flags and `--help` included.
    #[test]
    fn run_and_peak_rss_pass_every_word_on() {
        let words = ["trace", "-p", "1234", "--help", "--", "x"];
        let Task::Run { args } = Cli::parse_from(["xtask", "run", "--"].iter().chain(&words)).task else {
            panic!("not run");
        };
        assert_eq!(args, words);
        let argv = ["pfault", "stackcount", "-U", "-d", "0"];
        let Task::PeakRss { argv: got } =
            Cli::parse_from(["xtask", super::bench::PEAK_RSS].iter().chain(&argv)).task
        else {
            panic!("not peak-rss");
        };
        assert_eq!(got, argv);
    }
}
