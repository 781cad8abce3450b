//! `cargo xtask bench`: pfault side by side with the peer that does the same job, in one run.
//!
//! The cost a tracer adds is measured where it lands: on the traced workload. A workload
//! faults N fresh anonymous pages and reports its own wall time; the median time with a
//! tracer attached, minus the median with none, divided by N, is the tracer's cost per fault.
//! The tools take turns, round after round, so a slow spell of the machine falls on all of
//! them alike rather than on whichever ran then.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    artifacts::{build_pfault, workload},
    bench_pages,
    shell::{cargo, root, say},
    toolchain,
};

const PAGES: u64 = 600_000;
const CHUNK: u64 = 16_384;
const RUNS: usize = 5;
/// Workload runs per tracer start.
const REPEAT: usize = 2;
/// Added cost per fault (us) below which a tool is indistinguishable from no tracer here.
const NOISE: f64 = 0.05;

/// A tracer to measure: how to start it, and how to tell it has attached.
struct Tracer {
    name: &'static str,
    argv: Vec<String>,
    /// What it prints once attached ("": nothing; give it a second)...
    ready: &'static str,
    /// ...into this file when its output goes there (bpftrace -o), else on stdout or stderr.
    ready_file: Option<PathBuf>,
}

fn bench_dir() -> PathBuf {
    root().join("target/bench")
}

/// Runs the workload once; its own measured seconds.
fn run_workload(bin: &Path) -> Result<f64> {
    run_timed(bin, &[PAGES, CHUNK])
}

/// Runs `bin ARGS` once; the seconds it says it took (`seconds=S`).
fn run_timed(bin: &Path, args: &[u64]) -> Result<f64> {
    let out = Command::new(bin).args(args.iter().map(u64::to_string)).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("seconds="))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{} printed no time: {text}", bin.display()))
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
    if t.ready.is_empty() {
        std::thread::sleep(Duration::from_secs(1));
        return Ok(child);
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
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds of `run` with each tracer attached (None: no tracer), in turns.
fn measure(run: impl Fn() -> Result<f64>, tracers: &[Option<&Tracer>]) -> Result<Vec<f64>> {
    let mut times = vec![Vec::new(); tracers.len()];
    for round in 0..RUNS {
        say(format!("round {}/{RUNS}", round + 1));
        for (tracer, times) in tracers.iter().zip(&mut times) {
            let child = tracer.map(start).transpose()?.map(Running);
            for _ in 0..REPEAT {
                times.push(run()?);
            }
            if let Some(c) = child {
                stop(c)?;
            }
        }
    }
    Ok(times.into_iter().map(median).collect())
}

/// Nanoseconds in the kernel per fault and per program run, of `t`'s programs over one
/// workload run, from the kernel's own BPF statistics (on only for this: they cost two clock
/// reads per run).
fn kernel_cost(bin: &Path, t: &Tracer) -> Result<(f64, f64)> {
    let _stats = pfault_tests::BpfStats::enable().context("enabling kernel.bpf_stats_enabled")?;
    (|| {
        let running = Running(start(t)?);
        // bpftrace says it is attaching before its last CPU is: faults then go uncounted.
        std::thread::sleep(Duration::from_secs(1));
        let pid = running.0.id();
        let (ns0, runs0) = pfault_tests::bpf_run_stats(pid)?;
        run_workload(bin)?;
        let (ns1, runs1) = pfault_tests::bpf_run_stats(pid)?;
        stop(running)?;
        let (ns, runs) = ((ns1 - ns0) as f64, (runs1 - runs0).max(1) as f64);
        Ok((ns / PAGES as f64, ns / runs))
    })()
}

fn pfault_tracer(name: &'static str, pfault: &str, args: &[&str]) -> Tracer {
    let mut argv = vec![pfault.to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    Tracer {
        name,
        argv,
        ready: "probe mode",
        ready_file: None,
    }
}

/// bpftrace writing into `out` (its "Attaching" line lands there too).
fn bpftrace(name: &'static str, out: PathBuf, program: &str) -> Tracer {
    Tracer {
        name,
        argv: vec![
            "bpftrace".into(),
            "-o".into(),
            out.to_string_lossy().into_owned(),
            "-e".into(),
            program.into(),
        ],
        ready: "Attaching",
        ready_file: Some(out),
    }
}

const SYSCALLS: u64 = 3_000_000;

/// What noticing the mmaps of traced processes adds to every system call on the host: pfault
/// and bpftrace both hook the classic `syscalls:sys_exit_mmap` event.
fn syscall_cost(pfault: &str, bpftrace_out: &Path) -> Result<String> {
    let bin = workload("syscalls")?;
    let tracers = [
        pfault_tracer(
            "pfault trace -o json",
            pfault,
            &["trace", "-o", "json", "--output", "/dev/null"],
        ),
        bpftrace(
            "bpftrace tracepoint:syscalls:sys_exit_mmap",
            bpftrace_out.to_path_buf(),
            "tracepoint:syscalls:sys_exit_mmap { @ = count(); }",
        ),
    ];
    say(format!("syscalls: {SYSCALLS} getppid calls, {RUNS} rounds"));
    let all: Vec<Option<&Tracer>> = std::iter::once(None).chain(tracers.iter().map(Some)).collect();
    let secs = measure(|| run_timed(&bin, &[SYSCALLS]), &all)?;
    let ns = |s: f64| s * 1e9 / SYSCALLS as f64;
    let mut md = format!(
        "\nSystem calls while tracing (`syscalls {SYSCALLS}`: getppid in a loop), no tracer {:.0} ns per call:\n\n\
         | tool | ns per syscall | added ns |\n|---|---|---|\n",
        ns(secs[0])
    );
    for (t, s) in tracers.iter().zip(&secs[1..]) {
        say(format!("{}: {:.0} ns per syscall", t.name, ns(*s)));
        md += &format!("| `{}` | {:.0} | {:.0} |\n", t.name, ns(*s), ns(*s) - ns(secs[0]));
    }
    Ok(md)
}

/// The consumer alone: a million ring-buffer records replayed through `trace`'s decoder and
/// writers into a file (`cargo bench -p pfault-cli --bench consumer`).
fn consumer() -> Result<String> {
    say("consumer: replaying 1,000,000 records through trace's writers");
    let out = cargo()
        .args([
            "bench",
            "--quiet",
            "-p",
            "pfault-cli",
            "--bench",
            "consumer",
            "--",
            "1000000",
        ])
        .output()
        .context("running the consumer bench")?;
    if !out.status.success() {
        bail!(
            "the consumer bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut md = "The consumer alone (1,000,000 ring-buffer records decoded and written to a file by \
                  `trace`'s writers, one thread):\n\n| format | ns per event |\n|---|---|\n"
        .to_string();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "consumer json: N ns per event (...)"
        if let Some((format, rest)) = line.strip_prefix("consumer ").and_then(|l| l.split_once(": ")) {
            let ns = rest.split_whitespace().next().unwrap_or("?");
            say(format!("consumer {format}: {ns} ns per event"));
            md += &format!("| {format} | {ns} |\n");
        }
    }
    Ok(md)
}

/// The internal command behind [`startup`]: `cargo xtask peak-rss CMD ARGS` runs CMD and
/// prints its wall seconds and peak RSS in KiB.
pub const PEAK_RSS: &str = "peak-rss";

/// Runs `argv` to completion; prints `SECONDS KIB`.
///
/// A child's ru_maxrss starts from the peak RSS of the address space it was spawned from
/// (the kernel carries it over at exec), so a command spawned by this bench, grown large by
/// the runs before, would report the bench's own size. This runs in a fresh, small process.
pub fn peak_rss(argv: &[String]) -> Result<()> {
    let t = Instant::now();
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) } < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    println!("{} {}", t.elapsed().as_secs_f64(), ru.ru_maxrss);
    Ok(())
}

/// Wall seconds and peak RSS (KiB) of a command run to completion, median of RUNS.
fn startup(argv: &[&str]) -> Result<(f64, u64)> {
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let out = Command::new(std::env::current_exe()?)
            .arg(PEAK_RSS)
            .args(argv)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut f = text.split_whitespace().map(str::parse::<f64>);
        match (f.next(), f.next()) {
            (Some(Ok(secs)), Some(Ok(kib))) => runs.push((secs, kib as u64)),
            _ => bail!("{PEAK_RSS} {argv:?} printed {text:?}"),
        }
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(runs[runs.len() / 2])
}

/// What the CFI unwinder loaded for the workload: its tables, from `-o json`'s summary.
fn unwind_tables(pfault: &str, bin: &Path) -> Result<String> {
    let out = Command::new(pfault)
        .args(["stackcount", "-U", "-o", "json", "--output", "/dev/null", "--"])
        .arg(bin)
        .arg("1000")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: serde_json::Value = stderr
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .context("stackcount -o json printed no summary")?;
    let u = &summary["summary"]["unwind"]["tables"];
    let mut md = format!(
        "\nUnwind tables the CFI unwinder loaded for the workload (`stackcount -U`), of {} KiB:\n\n| binary | rows | KiB |\n|---|---|---|\n",
        u["capacity_bytes"].as_u64().unwrap_or(0) / 1024
    );
    for t in u["tables"].as_array().into_iter().flatten() {
        md += &format!(
            "| {} | {} | {:.1} |\n",
            t["path"].as_str().unwrap_or("?"),
            t["rows"],
            t["bytes"].as_f64().unwrap_or(0.0) / 1024.0
        );
    }
    Ok(md)
}

pub fn run() -> Result<()> {
    toolchain::ensure_packages(&[("bpftrace", "bpftrace"), ("perf", "linux-perf")])?;
    toolchain::ensure_tracefs()?;
    let pfault = build_pfault()?;
    let bin = workload("anon_writer")?;
    let dir = bench_dir();
    std::fs::create_dir_all(&dir)?;
    let p = pfault.to_string_lossy().into_owned();
    let out = |name: &str| dir.join(name);
    let trace_json = out("trace.json").to_string_lossy().into_owned();
    // Each job: pfault's command first, then the peers doing the same job.
    let jobs: Vec<(&'static str, Vec<Tracer>)> = vec![
        (
            "print every fault",
            vec![
                pfault_tracer("pfault trace -o json", &p, &["trace", "-o", "json", "--output", &trace_json]),
                bpftrace(
                    "bpftrace printf",
                    out("bpftrace-trace.txt"),
                    "tracepoint:exceptions:page_fault_user { printf(\"%d %d %s %lx %lx %lx\\n\", pid, tid, comm, args->address, args->ip, args->error_code); }",
                ),
            ],
        ),
        (
            "count per user stack",
            vec![
                pfault_tracer("pfault stackcount -U", &p, &["stackcount", "-U", "--output", "/dev/null"]),
                pfault_tracer(
                    "pfault stackcount -U --unwind fp",
                    &p,
                    &["stackcount", "-U", "--unwind", "fp", "--output", "/dev/null"],
                ),
                bpftrace("bpftrace @[ustack, pid, comm]", out("bpftrace-stacks.txt"), "software:page-faults:1 { @[ustack, pid, comm] = count(); }"),
                Tracer {
                    // perf's own answer to code without frame pointers: 8 KiB of stack copied
                    // per fault, unwound later (perf report). Its data goes nowhere: the
                    // copying is the cost while the workload runs.
                    name: "perf record --call-graph dwarf",
                    argv: [
                        "sh",
                        "-c",
                        "exec perf record -q -a -e page-faults -c 1 --call-graph dwarf -o - >/dev/null",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                    ready: "",
                    ready_file: None,
                },
            ],
        ),
        (
            "weigh per user stack",
            vec![
                pfault_tracer(
                    "pfault stackcount -U --weight latency",
                    &p,
                    &["stackcount", "-U", "--weight", "latency", "--output", "/dev/null"],
                ),
                pfault_tracer(
                    "pfault stackcount -U --weight bytes",
                    &p,
                    &["stackcount", "-U", "--weight", "bytes", "--output", "/dev/null"],
                ),
            ],
        ),
        ("count per file", vec![pfault_tracer("pfault ffaults", &p, &["ffaults", "--output", "/dev/null"])]),
        (
            "count per process",
            vec![
                pfault_tracer("pfault stat -a", &p, &["stat", "-a", "--output", "/dev/null"]),
                // The same counts for Prometheus, split by mode as well.
                pfault_tracer("pfault exporter", &p, &["exporter", "--listen", "127.0.0.1:0"]),
                bpftrace("bpftrace @[pid, comm]", out("bpftrace-stat.txt"), "tracepoint:exceptions:page_fault_user { @[pid, comm] = count(); }"),
                Tracer {
                    name: "perf stat -a",
                    argv: ["perf", "stat", "-a", "-e", "minor-faults,major-faults", "-o"]
                        .iter()
                        .map(|s| s.to_string())
                        .chain([out("perf-stat.txt").to_string_lossy().into_owned()])
                        .collect(),
                    // perf stat prints nothing until it ends: give it the time it takes to open
                    // its counters (it needs no compilation).
                    ready: "",
                    ready_file: None,
                },
            ],
        ),
        (
            "latency per process",
            vec![
                pfault_tracer("pfault stat -a -L", &p, &["stat", "-a", "-L", "--output", "/dev/null"]),
                bpftrace(
                    "bpftrace @lat[pid, comm] = hist()",
                    out("bpftrace-latency.txt"),
                    "tracepoint:exceptions:page_fault_user { @s[tid] = nsecs; } \
                     software:minor-faults:1, software:major-faults:1 /@s[tid]/ { @lat[pid, comm] = hist(nsecs - @s[tid]); delete(@s[tid]); }",
                ),
            ],
        ),
    ];
    say(format!(
        "workload: {PAGES} anonymous pages written once each, {RUNS} rounds of every tool, {REPEAT} runs each"
    ));
    let all: Vec<Option<&Tracer>> = std::iter::once(None)
        .chain(jobs.iter().flat_map(|(_, t)| t.iter().map(Some)))
        .collect();
    let mut secs = measure(|| run_workload(&bin), &all)?.into_iter();
    let base = secs.next().unwrap();
    say(format!(
        "no tracer: {base:.3} s ({:.2} us per fault)",
        base * 1e6 / PAGES as f64
    ));
    let mut md = format!(
        "Workload: `anon_writer {PAGES} {CHUNK}` (writes {PAGES} fresh anonymous pages), median of {RUNS} rounds x {REPEAT} runs, the tools taking turns; \
         no tracer: {base:.3} s ({:.2} us per fault).\n\n\
         | job | tool | workload s | added us/fault | pfault / this |\n|---|---|---|---|---|\n",
        base * 1e6 / PAGES as f64
    );
    let mut commands = String::new();
    let mut added_by = std::collections::HashMap::new();
    for (job, tracers) in &jobs {
        let mut ours = None;
        for t in tracers {
            let secs = secs.next().unwrap();
            let added = (secs - base) * 1e6 / PAGES as f64;
            say(format!("{}: {secs:.3} s, adds {added:.2} us per fault", t.name));
            added_by.insert(t.name, added);
            let ratio = match ours {
                None => {
                    ours = Some(added);
                    String::new()
                }
                // Below zero is noise: the tool costs nothing measurable.
                Some(_) if added < NOISE => "-".into(),
                Some(o) => format!("{:.2}", o.max(0.0) / added),
            };
            md += &format!("| {job} | `{}` | {secs:.3} | {added:.2} | {ratio} |\n", t.name);
            let cmd = t
                .argv
                .join(" ")
                .replace(&p, "pfault")
                .replace(&*dir.to_string_lossy(), "target/bench");
            commands += &format!("- {}: `{cmd}`\n", t.name);
        }
    }
    // What weighing stacks costs over counting them: latency, as timing costs stat; bytes, no
    // clock read.
    let over = |a: &str, b: &str| added_by[a] - added_by[b];
    md += &format!(
        "\nWeighing stacks, over `stackcount -U`: `--weight latency` adds {:.2} us per fault (`stat -a -L` over `stat -a`: {:.2} us), `--weight bytes` {:.2} us.\n",
        over("pfault stackcount -U --weight latency", "pfault stackcount -U"),
        over("pfault stat -a -L", "pfault stat -a"),
        over("pfault stackcount -U --weight bytes", "pfault stackcount -U"),
    );
    md += &format!(
        "The exporter's counts (by process, kind, mode and cgroup) add {:.2} us per fault, `stat -a` {:.2}.\n",
        added_by["pfault exporter"],
        added_by["pfault stat -a"],
    );
    md += "\nIn the kernel (kernel.bpf_stats_enabled, one workload run each):\n\n\
           | job | tool | ns per fault | ns per program run |\n|---|---|---|---|\n";
    for (job, tracers) in &jobs {
        for t in tracers
            .iter()
            .filter(|t| t.name.starts_with("pfault") || t.name.starts_with("bpftrace"))
        {
            let (per_fault, per_run) = kernel_cost(&bin, t)?;
            say(format!("{}: {per_fault:.0} ns per fault in the kernel", t.name));
            md += &format!("| {job} | `{}` | {per_fault:.0} | {per_run:.0} |\n", t.name);
        }
    }
    md += &unwind_tables(&p, &bin)?;
    md += &syscall_cost(&p, &out("bpftrace-mmap.txt"))?;
    let (pf_s, pf_kb) = startup(&[&p, "stackcount", "-U", "-d", "0", "--output", "/dev/null"])?;
    let (bt_s, bt_kb) = startup(&[
        "bpftrace",
        "-e",
        "software:page-faults:1 { @[ustack, pid, comm] = count(); } BEGIN { exit(); }",
    ])?;
    md += &format!(
        "\nStart-up (attach, then stop at once), median of {RUNS}:\n\n| tool | wall s | peak RSS MiB |\n|---|---|---|\n\
         | `pfault stackcount -U -d 0` | {pf_s:.3} | {:.1} |\n| `bpftrace ... BEGIN {{ exit(); }}` | {bt_s:.3} | {:.1} |\n\
         | pfault / bpftrace | {:.2} | {:.2} |\n",
        pf_kb as f64 / 1024.0,
        bt_kb as f64 / 1024.0,
        pf_s / bt_s,
        pf_kb as f64 / bt_kb as f64
    );
    // The other tools' start-up, beside stackcount's.
    md += "\n| tool | wall s | peak RSS MiB |\n|---|---|---|\n";
    for args in [&["trace", "-d", "0"][..], &["stat", "-a", "-d", "0"][..]] {
        let mut argv = vec![p.as_str()];
        argv.extend(args);
        argv.extend(["--output", "/dev/null"]);
        let (s, kb) = startup(&argv)?;
        md += &format!(
            "| `pfault {}` | {s:.3} | {:.1} |\n",
            args.join(" "),
            kb as f64 / 1024.0
        );
    }
    md += &format!("\n{}", consumer()?);
    md += &format!("\n### pfault pages\n\n{}", bench_pages::run()?);
    md += &format!("\nCommands:\n\n{commands}");
    std::fs::write(dir.join("results.md"), &md)?;
    println!("{md}");
    say(format!("written to {}", dir.join("results.md").display()));
    Ok(())
}
