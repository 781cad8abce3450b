//! What the tasks build to run: pfault's release binary and the C test workloads.

use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::shell::{cargo, root, sh};

pub fn build_pfault() -> Result<PathBuf> {
    sh(cargo().args(["build", "--quiet", "--release", "-p", "pfault-cli"]))?;
    Ok(root().join("target/release/pfault"))
}

/// How a workload is linked: against this machine's libraries, or with none left to find
/// (for a guest that has only busybox).
#[derive(Clone, Copy, PartialEq)]
pub enum Link {
    Dynamic,
    Static,
}

/// Builds `tests/workloads/NAME.c` with the tests' flags into `out` (a directory).
pub fn workload_into(name: &str, link: Link, out: &std::path::Path) -> Result<PathBuf> {
    let bin = out.join(name);
    std::fs::create_dir_all(out)?;
    let src = root().join("tests/workloads").join(format!("{name}.c"));
    let mut cc = Command::new("cc");
    cc.args(pfault_tests::workload_cflags(&src));
    if link == Link::Static {
        cc.arg("-static");
    }
    sh(cc.arg("-o").arg(&bin).arg(src))?;
    Ok(bin)
}

/// Builds `tests/workloads/NAME.c` as the tests do, into `target/workloads`.
pub fn workload(name: &str) -> Result<PathBuf> {
    workload_into(name, Link::Dynamic, &root().join("target/workloads"))
}
