//! `cargo xtask bench`, `pfault pages` part: how long reading pagemap, kpageflags and
//! kpagecount takes for a process holding 1 GiB of written anonymous memory, once in 4 KiB
//! pages and once in transparent huge pages (when the kernel gives them).

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{
    artifacts::{build_pfault, workload},
    shell::{root, say},
};

const MIB: u64 = 1024;
const RUNS: usize = 5;

/// The workload, holding its memory until dropped.
struct Holding(Child);

impl Holding {
    fn start(bin: &Path, mode: &str) -> Result<(Holding, u32)> {
        let mut child = Command::new(bin)
            .args([MIB.to_string().as_str(), mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting pages_anon")?;
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line)?;
        let held = Holding(child);
        let pid = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("pid="))
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("pages_anon did not say it was ready: {line:?}"))?;
        Ok((held, pid))
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        let _ = self.0.stdin.as_mut().map(|s| s.write_all(b"go\n"));
        let _ = self.0.wait();
    }
}

/// One timed `pfault pages -o json`; its seconds and the pages its summary counted.
fn time_pages(pfault: &Path, pid: u32, out: &Path) -> Result<(f64, u64)> {
    let start = Instant::now();
    let run = Command::new(pfault)
        .args(["pages", "-p", &pid.to_string(), "-o", "json", "--output"])
        .arg(out)
        .output()?;
    let secs = start.elapsed().as_secs_f64();
    if !run.status.success() {
        bail!(
            "pfault pages failed: {}",
            String::from_utf8_lossy(&run.stderr).trim()
        );
    }
    let text = std::fs::read_to_string(out)?;
    let pages = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"{"summary":{"pages":"#))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no summary line in {}", out.display()))?;
    Ok((secs, pages))
}

/// The figures as a markdown section for the bench report.
pub fn run() -> Result<String> {
    let pfault = build_pfault()?;
    let bin = workload("pages_anon")?;
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("pages.json");
    let mut md = format!(
        "`pfault pages -p PID -o json` on a process holding {MIB} MiB of written anonymous memory \
         (`pages_anon {MIB} nohuge|huge`), median of {RUNS} runs, process start included:\n\n\
         | memory | pages walked | seconds | pages/s |\n|---|---|---|---|\n"
    );
    for (mode, label) in [("nohuge", "4 KiB pages"), ("huge", "MADV_HUGEPAGE (THP)")] {
        let (held, pid) = Holding::start(&bin, mode)?;
        let mut runs = (0..RUNS)
            .map(|_| time_pages(&pfault, pid, &out))
            .collect::<Result<Vec<_>>>()?;
        drop(held);
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (secs, pages) = runs[RUNS / 2];
        say(format!("pfault pages, {label}: {pages} pages in {secs:.3} s"));
        md += &format!(
            "| {MIB} MiB anonymous, {label} | {pages} | {secs:.3} | {:.1}M |\n",
            pages as f64 / secs / 1e6
        );
    }
    Ok(md)
}
