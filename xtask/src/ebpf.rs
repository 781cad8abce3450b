//! The committed eBPF object: built from pfault-ebpf with nightly, stamped with a hash of its
//! sources so that a stale object is noticed.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;

use crate::{
    shell::{cargo, root, say, sh},
    toolchain,
};

/// The objects, each with the features of pfault-ebpf it is built with: the default one, and
/// the compat one for kernels without bpf_loop, bpf_find_vma or task storage for tracing.
pub const OBJECTS: [(&str, &[&str]); 2] = [
    ("pfault-cli/bpf/pfault.bpf.o", &[]),
    ("pfault-cli/bpf/pfault-compat.bpf.o", &["compat"]),
];
/// One stamp for both: they are built from the same sources.
const STAMP: &str = "pfault-cli/bpf/pfault.bpf.o.sources";

/// A hash of everything the eBPF object is built from: the two crates' sources, the lock file's
/// entries of the packages pfault-ebpf is built from, the root manifest (it pins aya-ebpf and
/// sets the object's profile), the flags, and the pinned toolchain (FNV-1a: a staleness check,
/// not a security boundary).
fn sources_hash() -> Result<String> {
    let root = root();
    let mut files = vec![root.join("Cargo.toml")];
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
    feed(locked_closure(&std::fs::read_to_string(root.join("Cargo.lock"))?, "pfault-ebpf").as_bytes());
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

/// The `[[package]]` entries of a lock file for `package` and what it depends on, transitively,
/// in the file's order: a dependency that another crate adds or updates leaves the object fresh.
fn locked_closure(lock: &str, package: &str) -> String {
    let entries: Vec<&str> = lock.split("\n[[package]]\n").skip(1).collect();
    let field = |entry: &str, key: &str| -> Option<String> {
        entry
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(" = \""))
            .map(|v| v.trim_end_matches('"').to_string())
    };
    // `"name"`, `"name version"` or `"name version (source)"`: the name is what is matched.
    let depends = |entry: &str| -> Vec<String> {
        entry
            .lines()
            .skip_while(|l| !l.starts_with("dependencies = ["))
            .skip(1)
            .take_while(|l| !l.starts_with(']'))
            .filter_map(|l| {
                l.trim()
                    .trim_matches(['"', ','])
                    .split(' ')
                    .next()
                    .map(String::from)
            })
            .collect()
    };
    let mut wanted = vec![package.to_string()];
    let mut taken = vec![false; entries.len()];
    while let Some(name) = wanted.pop() {
        for (i, e) in entries.iter().enumerate() {
            if !taken[i] && field(e, "name").as_deref() == Some(name.as_str()) {
                taken[i] = true;
                wanted.extend(depends(e));
            }
        }
    }
    entries
        .iter()
        .zip(taken)
        .filter(|(_, t)| *t)
        .map(|(e, _)| *e)
        .collect::<Vec<_>>()
        .join("\n")
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

pub fn object_is_fresh() -> Result<bool> {
    let stamp = std::fs::read_to_string(root().join(STAMP)).unwrap_or_default();
    Ok(stamp.trim() == sources_hash()? && OBJECTS.iter().all(|(o, _)| root().join(o).exists()))
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
/// verifier walks each byte of it, several times the instructions it verifies otherwise, and
/// pfault's start-up waits for the verifier.
const EBPF_RUSTFLAGS: [&str; 3] = [
    "-Cdebuginfo=2",
    "-Clink-arg=--btf",
    "-Clink-arg=--disable-expand-memcpy-in-order",
];

/// Compiles pfault-ebpf with nightly for bpfel, with `features`, and returns the object's path
/// (the same for every set of features: take it before the next build).
pub fn compile_ebpf(features: &[&str]) -> Result<PathBuf> {
    toolchain::ensure_ebpf_toolchain()?;
    say(format!(
        "building the eBPF object (nightly, bpfel-unknown-none{})",
        features.iter().map(|f| format!(", {f}")).collect::<String>()
    ));
    sh(nightly_cargo()
        .env("CARGO_ENCODED_RUSTFLAGS", EBPF_RUSTFLAGS.join("\x1f"))
        .args(["build", "--quiet", "--release", "-p", "pfault-ebpf"])
        .args(["--features", &features.join(",")])
        .args(BPF_TARGET))?;
    Ok(root().join("target/bpf/bpfel-unknown-none/release/pfault"))
}

const BPF_TARGET: [&str; 4] = ["--target", "bpfel-unknown-none", "-Z", "build-std=core"];

/// Rebuilds the committed eBPF object and its source stamp.
pub fn build_ebpf() -> Result<()> {
    // Formatted first: `cargo fmt` after the stamp would make the object look stale.
    sh(cargo().args(["fmt", "-p", "pfault-ebpf", "-p", "pfault-common"]))?;
    for (object, features) in OBJECTS {
        let built = compile_ebpf(features)?;
        std::fs::copy(&built, root().join(object))?;
        say(format!(
            "wrote {object} (commit it with the sources it was built from)"
        ));
    }
    std::fs::write(root().join(STAMP), format!("{}\n", sources_hash()?))?;
    Ok(())
}

/// Lints pfault-ebpf with nightly for its own target, as each object is built.
pub fn clippy() -> Result<()> {
    for (_, features) in OBJECTS {
        sh(nightly_cargo()
            .env("CARGO_TARGET_DIR", root().join("target/bpf-clippy"))
            .args(["clippy", "--quiet", "-p", "pfault-ebpf"])
            .args(["--features", &features.join(",")])
            .args(BPF_TARGET)
            .args(["--", "-D", "warnings"]))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::locked_closure;

    const LOCK: &str = "version = 4

[[package]]
name = \"aya-ebpf\"
version = \"0.2.1\"
dependencies = [
 \"aya-ebpf-cty\",
]

[[package]]
name = \"aya-ebpf-cty\"
version = \"0.2.2\"

[[package]]
name = \"clap\"
version = \"4.6.7\"

[[package]]
name = \"pfault-ebpf\"
version = \"0.1.0\"
dependencies = [
 \"aya-ebpf\",
]

[[package]]
name = \"xtask\"
version = \"0.1.0\"
dependencies = [
 \"anyhow\",
]
";

    /// A dependency of xtask leaves the object's inputs as they were; one of pfault-ebpf's
    /// (however deep) does not.
    #[test]
    fn only_the_ebpf_crates_locked_packages_count() {
        let closure = locked_closure(LOCK, "pfault-ebpf");
        assert!(closure.contains("aya-ebpf-cty"), "{closure}");
        assert!(
            !closure.contains("clap") && !closure.contains("xtask"),
            "{closure}"
        );
        let xtask_dep = LOCK.replace(" \"anyhow\",", " \"anyhow\",\n \"clap\",");
        assert_eq!(locked_closure(&xtask_dep, "pfault-ebpf"), closure);
        let deep_update = LOCK.replace("0.2.2", "0.2.3");
        assert_ne!(locked_closure(&deep_update, "pfault-ebpf"), closure);
    }
}
