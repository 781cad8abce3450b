//! Installs what building the eBPF side needs, on a fresh machine of this kind.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::shell::{home, say, sh};

/// bpf-linker's release, built against the nightly toolchain's own libLLVM (no matching LLVM
/// is packaged for this distribution).
const BPF_LINKER_VERSION: &str = "0.13.0";

fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cargo"))
        .join("bin")
}

/// PATH with cargo's bin directory first, where bpf-linker is installed.
pub fn path_with_cargo_bin() -> std::ffi::OsString {
    let mut paths = vec![cargo_bin()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

/// The nightly that builds the committed eBPF object, as `rustc -V` names it. Pinned: another
/// nightly (another LLVM) would build a different object, and bpf-linker must match its LLVM.
pub const NIGHTLY: &str = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)";

/// What nightly's rustc prints for `args`.
fn nightly_rustc(args: &[&str]) -> Result<String> {
    let out = Command::new("rustup")
        .args(["run", "nightly", "rustc"])
        .args(args)
        .output()
        .context("running rustc +nightly")?;
    if !out.status.success() {
        bail!(
            "no nightly toolchain (rustup toolchain install nightly-2026-05-19): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// The pinned nightly's sysroot; fails on another nightly.
fn nightly_sysroot() -> Result<PathBuf> {
    let found = nightly_rustc(&["-V"])?;
    if found != NIGHTLY {
        bail!(
            "the eBPF object is built with `{NIGHTLY}`, but this machine's nightly is `{found}`: \
             make the pinned one `nightly` (rustup toolchain install nightly-2026-05-19), or move \
             the pin in xtask/src/toolchain.rs and rebuild the object"
        );
    }
    Ok(PathBuf::from(nightly_rustc(&["--print", "sysroot"])?))
}

pub fn ensure_ebpf_toolchain() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        say("installing rust-src for nightly (build-std needs it)");
        sh(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    let linker_ok = Command::new(cargo_bin().join("bpf-linker"))
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION));
    if !linker_ok {
        install_bpf_linker(&sysroot)?;
    }
    Ok(())
}

/// Builds bpf-linker against nightly's libLLVM through a prefix of symlinks that outlives
/// the build (the binary keeps an rpath to it).
fn install_bpf_linker(sysroot: &Path) -> Result<()> {
    let lib = std::fs::read_dir(sysroot.join("lib"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so."))
        })
        .context("the nightly toolchain ships no libLLVM.so.*")?;
    let name = lib.file_name().unwrap().to_string_lossy().into_owned();
    let major = name
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .unwrap_or("")
        .to_string();
    let prefix = home().join(".cache/pfault/llvm");
    let dir = prefix.join("lib");
    std::fs::create_dir_all(&dir)?;
    for link in ["libLLVM.so", name.as_str()] {
        let p = dir.join(link);
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink(&lib, &p)?;
    }
    say(format!(
        "installing bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {major} (about a minute)"
    ));
    sh(Command::new("rustup")
        .env("LLVM_PREFIX", &prefix)
        .env_remove("RUSTUP_TOOLCHAIN")
        .args([
            "run",
            "nightly",
            "cargo",
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{major}")))
}

pub fn ensure_tracefs() -> Result<()> {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return Ok(());
    }
    say("mounting tracefs at /sys/kernel/tracing");
    sh(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
}

/// Installs Debian packages whose commands are missing, without their recommends (qemu's
/// would bring a GTK and GStreamer stack the tests never use).
pub fn ensure_packages(pkgs: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = pkgs
        .iter()
        .filter(|(cmd, _)| !command_exists(cmd))
        .map(|(_, p)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    say(format!("installing {}", missing.join(" ")));
    sh(Command::new("apt-get").args(["update", "-qq"]))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

pub fn command_exists(cmd: &str) -> bool {
    if cmd.contains('/') {
        return Path::new(cmd).exists();
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|d| d.join(cmd).is_file())
}
