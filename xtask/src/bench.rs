//! `cargo xtask bench`: pfault side by side with the peer that does the same job, in one run.
//!
//! The cost a tracer adds is measured where it lands: on the traced workload. A workload
//! faults N fresh anonymous pages and reports its own wall time; the median time with a
//! tracer attached, minus the median with none, divided by N, is the tracer's cost per fault.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{root, say, sh, toolchain};

const PAGES: u64 = 600_000;
const CHUNK: u64 = 16_384;
const RUNS: usize = 5;

/// A tracer to measure: how to start it, and how to tell it has attached.
struct Tracer {
    name: &'static str,
    argv: Vec<String>,
    /// What it prints once attached...
    ready: &'static str,
    /// ...into this file when its output goes there (bpftrace -o), else on stdout or stderr.
    ready_file: Option<PathBuf>,
}

fn bench_dir() -> PathBuf {
    root().join("target/bench")
}

fn workload() -> Result<PathBuf> {
    let out = root().join("target/workloads/anon_writer");
    std::fs::create_dir_all(out.parent().unwrap())?;
    sh(Command::new("cc")
        .args(["-O0", "-g", "-D_GNU_SOURCE", "-fno-omit-frame-pointer", "-o"])
        .arg(&out)
        .arg(root().join("tests/workloads/anon_writer.c")))?;
    Ok(out)
}

/// Runs the workload once; its own measured seconds.
fn run_workload(bin: &Path) -> Result<f64> {
    let out = Command::new(bin)
        .args([PAGES.to_string(), CHUNK.to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("seconds="))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("workload printed no time: {text}"))
}

/// Starts a tracer and waits until it says it has attached.
fn start(t: &Tracer) -> Result<Child> {
    let mut child = Command::new(&t.argv[0])
        .args(&t.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", t.name))?;
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        let ready = t.ready;
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if line.contains(ready) {
                    let _ = tx.send(());
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let in_file = t.ready_file.as_ref().is_some_and(|f| {
            std::fs::read(f).is_ok_and(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).contains(t.ready))
        });
        if in_file || rx.try_recv().is_ok() {
            return Ok(child);
        }
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            bail!("{} did not attach within 60 s", t.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A started tracer; killed if the measurement fails before [`stop`].
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn stop(mut running: Running) -> Result<()> {
    let child = &mut running.0;
    unsafe { libc_kill(child.id() as i32, 2) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            bail!("tracer did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median workload seconds with `tracer` attached (None: no tracer).
fn measure(bin: &Path, tracer: Option<&Tracer>) -> Result<f64> {
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let child = tracer.map(start).transpose()?.map(Running);
        times.push(run_workload(bin)?);
        if let Some(c) = child {
            stop(c)?;
        }
    }
    Ok(median(times))
}

struct Row {
    job: &'static str,
    tool: &'static str,
    command: String,
    secs: f64,
    added_us: f64,
}

pub fn run(_args: &[String]) -> Result<()> {
    toolchain::ensure_packages(&[("bpftrace", "bpftrace"), ("perf", "linux-perf")])?;
    toolchain::ensure_tracefs()?;
    let pfault = crate::build_pfault()?;
    let bin = workload()?;
    let dir = bench_dir();
    std::fs::create_dir_all(&dir)?;
    let p = pfault.to_string_lossy().into_owned();
    let out = |name: &str| dir.join(name).to_string_lossy().into_owned();
    // Each job: pfault's command, then the peer's doing the same job.
    let jobs: Vec<(&'static str, Tracer, Tracer)> = vec![(
        "print every fault",
        Tracer {
            name: "pfault trace -o json",
            argv: vec![p.clone(), "trace".into(), "-o".into(), "json".into(), "--output".into(), out("trace.json")],
            ready: "probe mode",
            ready_file: None,
        },
        Tracer {
            name: "bpftrace printf",
            argv: vec![
                "bpftrace".into(),
                "-o".into(),
                out("bpftrace-trace.txt"),
                "-e".into(),
                "tracepoint:exceptions:page_fault_user { printf(\"%d %d %s %lx %lx %lx\\n\", pid, tid, comm, args->address, args->ip, args->error_code); }"
                    .into(),
            ],
            ready: "Attaching",
            ready_file: Some(dir.join("bpftrace-trace.txt")),
        },
    )];
    say(format!(
        "workload: {PAGES} anonymous pages written once each, median of {RUNS} runs per tool"
    ));
    let base = measure(&bin, None)?;
    say(format!(
        "no tracer: {base:.3} s ({:.2} us per fault)",
        base * 1e6 / PAGES as f64
    ));
    let mut rows = Vec::new();
    for (job, ours, peer) in &jobs {
        for t in [ours, peer] {
            let secs = measure(&bin, Some(t))?;
            let added_us = (secs - base) * 1e6 / PAGES as f64;
            say(format!(
                "{}: {secs:.3} s, adds {added_us:.2} us per fault",
                t.name
            ));
            rows.push(Row {
                job,
                tool: t.name,
                command: t.argv[1..].join(" ").replace(&p, "pfault"),
                secs,
                added_us,
            });
        }
    }
    let mut md = format!(
        "Workload: `anon_writer {PAGES} {CHUNK}` (writes {PAGES} fresh anonymous pages), median of {RUNS} runs; \
         no tracer: {base:.3} s ({:.2} us per fault).\n\n\
         | job | tool | workload s | added us/fault | pfault / peer |\n|---|---|---|---|---|\n",
        base * 1e6 / PAGES as f64
    );
    for pair in rows.chunks(2) {
        let ratio = pair[0].added_us / pair[1].added_us;
        for (i, r) in pair.iter().enumerate() {
            let ratio = if i == 0 {
                format!("{ratio:.2}")
            } else {
                String::new()
            };
            md += &format!(
                "| {} | `{}` | {:.3} | {:.2} | {ratio} |\n",
                r.job, r.tool, r.secs, r.added_us
            );
        }
    }
    md += "\nCommands:\n\n";
    for r in &rows {
        md += &format!(
            "- {}: `{}`\n",
            r.tool,
            r.command
                .replace(&dir.to_string_lossy().into_owned(), "target/bench")
        );
    }
    std::fs::write(dir.join("results.md"), &md)?;
    println!("{md}");
    say(format!("written to {}", dir.join("results.md").display()));
    Ok(())
}
