//! pfault's tasks: `cargo xtask run -- ARGS`, `cargo xtask test`, `cargo xtask build-ebpf`,
//! `cargo xtask bench`, `cargo xtask vm-test`.
//!
//! Each task installs what it needs on a fresh machine (rust-src for nightly, bpf-linker
//! built against the nightly toolchain's own LLVM, tracefs mounted) and says so.

mod bench;
mod bench_pages;
mod toolchain;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask <run [-- ARGS] | test | build-ebpf | bench | vm-test>";

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest: Vec<String> = args.iter().skip(1).skip_while(|a| *a == "--").cloned().collect();
    match args.first().map(String::as_str) {
        Some("run") => run(&rest),
        Some("test") => test(),
        Some("build-ebpf") => build_ebpf(),
        Some("bench") => bench::run(&rest),
        Some(bench::PEAK_RSS) => bench::peak_rss(&rest),
        Some("vm-test") => vm::run(),
        _ => bail!("{USAGE}"),
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn say(msg: impl AsRef<str>) {
    eprintln!("xtask: {}", msg.as_ref());
}

/// Runs a command, failing with its command line when it fails.
pub fn sh(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

const OBJECT: &str = "pfault-cli/bpf/pfault.bpf.o";
const STAMP: &str = "pfault-cli/bpf/pfault.bpf.o.sources";

/// A hash of everything the eBPF object is built from: the two crates' sources, the lock file
/// and the root manifest (it pins aya-ebpf and sets the object's profile), the flags, and the
/// pinned toolchain (FNV-1a: a staleness check, not a security boundary).
fn sources_hash() -> Result<String> {
    let root = root();
    let mut files = vec![root.join("Cargo.lock"), root.join("Cargo.toml")];
    for dir in ["pfault-ebpf", "pfault-common"] {
        collect(&root.join(dir), &mut files)?;
    }
    files.sort();
    let mut h: u64 = 0xcbf29ce484222325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes.iter().chain([&0]) {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
    };
    feed(toolchain::NIGHTLY.as_bytes());
    for flag in EBPF_RUSTFLAGS {
        feed(flag.as_bytes());
    }
    for f in files {
        let rel = f.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
        feed(rel.as_bytes());
        feed(&std::fs::read(&f)?);
    }
    Ok(format!("{h:016x}"))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            collect(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs" || x == "toml") {
            out.push(p);
        }
    }
    Ok(())
}

fn object_is_fresh() -> Result<bool> {
    let stamp = std::fs::read_to_string(root().join(STAMP)).unwrap_or_default();
    Ok(stamp.trim() == sources_hash()? && root().join(OBJECT).exists())
}

/// Cargo of the nightly toolchain, for the bpfel target. Through `rustup run`: the CARGO that
/// runs xtask is stable's own binary, which knows no `+nightly`.
fn nightly_cargo() -> Command {
    let mut c = Command::new("rustup");
    c.current_dir(root())
        .args(["run", "nightly", "cargo"])
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTFLAGS")
        .env("CARGO_TARGET_DIR", root().join("target/bpf"))
        .env("PATH", toolchain::path_with_cargo_bin());
    c
}

/// Debug info and `--btf` give the object the BTF the verifier wants (bpf_loop and
/// bpf_find_vma callbacks need its func info). bpf-linker asks LLVM to keep memcpy in order by
/// default, which also turns every memset and struct copy into a call to a byte loop; the
/// verifier walks each byte of it (trace's programs: 44k insns verified with it, 11k
/// without, and its start-up 80 -> 20 ms).
const EBPF_RUSTFLAGS: [&str; 3] = [
    "-Cdebuginfo=2",
    "-Clink-arg=--btf",
    "-Clink-arg=--disable-expand-memcpy-in-order",
];

/// Compiles pfault-ebpf with nightly for bpfel and returns the object's path.
fn compile_ebpf() -> Result<PathBuf> {
    toolchain::ensure_ebpf_toolchain()?;
    say("building the eBPF object (nightly, bpfel-unknown-none)");
    sh(nightly_cargo()
        .env("CARGO_ENCODED_RUSTFLAGS", EBPF_RUSTFLAGS.join("\x1f"))
        .args(["build", "--quiet", "--release", "-p", "pfault-ebpf"])
        .args(BPF_TARGET))?;
    Ok(root().join("target/bpf/bpfel-unknown-none/release/pfault"))
}

const BPF_TARGET: [&str; 4] = ["--target", "bpfel-unknown-none", "-Z", "build-std=core"];

/// Rebuilds the committed eBPF object and its source stamp.
fn build_ebpf() -> Result<()> {
    // Formatted first: `cargo fmt` after the stamp would make the object look stale.
    sh(cargo().args(["fmt", "-p", "pfault-ebpf", "-p", "pfault-common"]))?;
    let built = compile_ebpf()?;
    std::fs::copy(&built, root().join(OBJECT))?;
    std::fs::write(root().join(STAMP), format!("{}\n", sources_hash()?))?;
    say(format!(
        "wrote {OBJECT} (commit it with the sources it was built from)"
    ));
    Ok(())
}

pub fn build_pfault() -> Result<PathBuf> {
    sh(cargo().args(["build", "--quiet", "--release", "-p", "pfault-cli"]))?;
    Ok(root().join("target/release/pfault"))
}

fn run(args: &[String]) -> Result<()> {
    if !object_is_fresh()? {
        say("pfault-ebpf changed since the committed object was built: rebuilding it");
        build_ebpf()?;
    }
    toolchain::ensure_tracefs()?;
    let bin = build_pfault()?;
    let status = Command::new(bin).args(args).status()?;
    std::process::exit(status.code().unwrap_or(1));
}

fn test() -> Result<()> {
    // The committed object is what users get: it must match the sources.
    if !object_is_fresh()? {
        bail!("{OBJECT} is stale against pfault-ebpf/pfault-common: run `cargo xtask build-ebpf` and commit the result");
    }
    // And the sources must still build with the toolchain this machine can install.
    compile_ebpf()?;
    toolchain::ensure_tracefs()?;
    // The tests use the clients a user would: `pfault top` in a real terminal, pprof
    // profiles in `go tool pprof`.
    toolchain::ensure_packages(&[
        ("tmux", "tmux"),
        ("go", "golang-go"),
        ("prometheus", "prometheus"),
    ])?;
    say("checking format and lints");
    sh(cargo().args(["fmt", "--all", "--check"]))?;
    // The host crates with stable; the kernel crate with nightly for its own target.
    sh(cargo().args(["clippy", "--quiet", "--all-targets", "--", "-D", "warnings"]))?;
    sh(nightly_cargo()
        .env("CARGO_TARGET_DIR", root().join("target/bpf-clippy"))
        .args(["clippy", "--quiet", "-p", "pfault-ebpf"])
        .args(BPF_TARGET)
        .args(["--", "-D", "warnings"]))?;
    let bin = build_pfault()?;
    say("running unit and end-to-end tests (the e2e tests load pfault's programs into this kernel)");
    let (passed, failed) = cargo_test(&bin)?;
    if failed > 0 {
        println!("tests: {passed} passed, {failed} failed");
        bail!("{failed} tests failed");
    }
    if std::env::var_os("PFAULT_SKIP_VM").is_none() {
        vm::run()?;
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
