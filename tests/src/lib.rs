//! Helpers for pfault's end-to-end tests: build the C workloads, run pfault against them,
//! and read the workloads' own ground truth (getrusage deltas they print).

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// Whether this test may run: end-to-end tests load eBPF programs, so as another user than
/// root they skip, saying so on stderr (as aya's integration tests do). Call it first:
/// `if !root_or_skip() { return; }`.
pub fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    // Straight to stderr, past the test harness's capture, so a passing run shows the skip.
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(|n| format!("{n}: "))
        .unwrap_or_default();
    let _ = writeln!(
        std::io::stderr(),
        "{test}skipped: needs root (loads eBPF programs)"
    );
    false
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A scratch directory on disk (not tmpfs: major-fault tests need a real block device).
pub fn scratch(name: &str) -> PathBuf {
    let d = root().join("target/e2e").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The pfault binary `cargo xtask test` built.
pub fn pfault() -> Command {
    let bin = std::env::var_os("PFAULT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/release/pfault"));
    assert!(
        bin.exists(),
        "{} not built: run the tests through `cargo xtask test`",
        bin.display()
    );
    Command::new(bin)
}

/// The flags every `tests/workloads/*.c` is compiled with, by the tests and by `cargo xtask`
/// (bench, vm-test): -O0, because gcc drops the frame of leaf functions even with
/// -fno-omit-frame-pointer, and a frame-pointer walk then skips their caller; then the
/// source's own, from a first line `/* cflags: FLAGS`.
pub fn workload_cflags(src: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(src).unwrap_or_default();
    let own = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("/* cflags:"))
        .unwrap_or_default();
    ["-O0", "-g", "-D_GNU_SOURCE", "-fno-omit-frame-pointer"]
        .into_iter()
        .chain(own.split_whitespace())
        .map(String::from)
        .collect()
}

/// Compiles `tests/workloads/NAME.c` once per change, with [`workload_cflags`].
pub fn workload(name: &str) -> PathBuf {
    build_once(&format!("{name}.c"), name, |src, out| {
        Command::new("cc")
            .args(workload_cflags(src))
            .arg("-o")
            .arg(out)
            .arg(src)
            .status()
            .expect("cc")
    })
}

/// Compiles `tests/workloads/NAME.rs` as cargo's release profile would, without frame pointers.
pub fn rust_workload(name: &str) -> PathBuf {
    build_once(&format!("{name}.rs"), name, |src, out| {
        Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .args(["-C", "opt-level=2", "-C", "force-frame-pointers=no", "-g", "-o"])
            .arg(out)
            .arg(src)
            .status()
            .expect("rustc")
    })
}

/// Builds `tests/workloads/NAME.go` with `go build` (Debian's golang-go), as Go builds by default.
pub fn go_workload(name: &str) -> PathBuf {
    build_once(&format!("{name}.go"), name, |src, out| {
        let cache = root().join("target/go-cache");
        Command::new("go")
            .args(["build", "-o"])
            .arg(out)
            .arg(src)
            // go wants a build cache; one under target/ does not depend on $HOME.
            .env("GOCACHE", &cache)
            .status()
            .expect("go build (apt-get install golang-go)")
    })
}

/// `target/workloads/NAME`, built from `tests/workloads/SOURCE` by `build` when older than it.
fn build_once(
    source: &str,
    name: &str,
    build: impl FnOnce(&Path, &Path) -> std::process::ExitStatus,
) -> PathBuf {
    let src = root().join("tests/workloads").join(source);
    let out_dir = root().join("target/workloads");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(name);
    let fresh = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let header = root().join("tests/workloads/common.h");
    if fresh(&out) < fresh(&src).max(fresh(&header)) {
        assert!(build(&src, &out).success(), "compiling {}", src.display());
    }
    out
}

/// `key=value` pairs a workload printed.
pub fn kv(text: &str) -> HashMap<String, String> {
    text.split_whitespace()
        .filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

pub fn num(map: &HashMap<String, String>, key: &str) -> u64 {
    map.get(key)
        .unwrap_or_else(|| panic!("workload printed no {key}: {map:?}"))
        .parse()
        .unwrap()
}

pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// A path in /tmp no run has used.
pub fn unique_tmp(what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    PathBuf::from(format!("/tmp/pfault-x-{what}-{}-{nanos}", std::process::id()))
}

pub fn stderr_of(run: &Output) -> String {
    String::from_utf8_lossy(&run.stderr).into_owned()
}

/// A failed run's stderr: exactly one line, `pfault: ...`, with no panic or backtrace.
pub fn one_error_line(run: &Output, what: &str) -> String {
    let err = stderr_of(run);
    assert!(
        !run.status.success(),
        "{what} succeeded: {err}{}",
        String::from_utf8_lossy(&run.stdout)
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace") && !err.contains("RUST_BACKTRACE"),
        "{what} panicked: {err}"
    );
    assert_eq!(
        err.lines().count(),
        1,
        "{what}: one line expected on stderr:\n{err}"
    );
    assert!(err.starts_with("pfault: "), "{what}: {err}");
    err
}

/// Runs a command to completion, failing the test if it takes longer than `limit`.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_with_timeout(child, limit)
}

pub fn wait_with_timeout(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "timed out after {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A workload started with `wait`, held until [`Held::go`].
pub struct Held {
    pub child: Child,
    pub pid: u32,
}

impl Held {
    pub fn start(cmd: &mut Command) -> Held {
        hold(cmd).0
    }

    /// Lets it run and returns what it printed.
    pub fn go(mut self) -> String {
        self.release();
        let out = wait_with_timeout(self.child, Duration::from_secs(120));
        assert!(out.status.success(), "workload failed: {:?}", out.status);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Lets it run without waiting: to start several at once.
    pub fn release(&mut self) {
        self.child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }

    /// For a workload started with `wait linger` and released: the `key=value`s it printed up
    /// to its "lingering" line, when its work is done and it waits, alive, for [`Held::finish`].
    pub fn lingering(&mut self) -> HashMap<String, String> {
        // Nothing follows "lingering" until finish, so this reader buffers nothing past it.
        let mut out = BufReader::new(self.child.stdout.as_mut().unwrap());
        let mut said = HashMap::new();
        loop {
            let mut line = String::new();
            assert_ne!(
                out.read_line(&mut line).unwrap(),
                0,
                "workload ended before lingering: {said:?}"
            );
            if line.trim() == "lingering" {
                return said;
            }
            said.extend(kv(&line));
        }
    }

    /// Lets a lingering workload exit; fails the test if it (or, when it is a pfault running
    /// the workload as its command, pfault) fails.
    pub fn finish(mut self) {
        self.child.stdin.as_mut().unwrap().write_all(b"done\n").unwrap();
        let out = wait_with_timeout(self.child, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "{:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A pfault started in the background, known to have attached its probes.
pub struct Attached {
    child: Child,
    head: String,
    /// stderr after `head`, as it comes (a profile's engine says its probe mode there too).
    rest: std::sync::Arc<std::sync::Mutex<String>>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl Attached {
    /// Starts pfault and waits until it has attached (it says its probe mode on stderr).
    pub fn start(cmd: &mut Command) -> Attached {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pfault");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if err.read_line(&mut line).unwrap() == 0 {
                panic!("pfault exited before attaching: {head}");
            }
            head.push_str(&line);
            if line.contains("probe mode") {
                break;
            }
        }
        // Keep draining stderr so pfault never blocks on it.
        let rest = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let into = rest.clone();
        let drain = std::thread::spawn(move || {
            let mut line = String::new();
            while err.read_line(&mut line).is_ok_and(|n| n > 0) {
                into.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Attached {
            child,
            head,
            rest,
            drain: Some(drain),
        }
    }

    /// Waits until pfault's stderr since it attached holds `text` (panics after `limit`):
    /// e.g. the probe mode an exporter's profile engine says once it has attached.
    pub fn wait_for_stderr(&self, text: &str, limit: Duration) {
        let start = Instant::now();
        while !self.rest.lock().unwrap().contains(text) {
            assert!(
                start.elapsed() < limit,
                "pfault did not say {text:?} within {limit:?}: {}",
                self.rest.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// pfault's process id (to stop and continue it, for one).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for pfault to end by itself; returns its whole stderr.
    pub fn wait(mut self, limit: Duration) -> String {
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!("pfault did not end by itself within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = self.child.wait().unwrap();
        if let Some(drain) = self.drain.take() {
            drain.join().unwrap();
        }
        let stderr = std::mem::take(&mut self.head) + &self.rest.lock().unwrap();
        assert!(status.success(), "pfault failed ({status}): {stderr}");
        stderr
    }
}

impl Drop for Attached {
    /// A pfault the test did not wait for (one that serves until stopped, or a test that
    /// failed) is stopped as a user would, SIGTERM, then killed: none is left tracing the host
    /// for the tests after it.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // SAFETY: kill(2) on our own child, which has not been reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON summary pfault ends its stderr with under `-o json`: `{"events": N, "lost":
/// {"ringbuf": N, ...}, "probe_mode": ..., "seconds": ..., "exit_status": N}`.
pub fn summary(stderr: &str) -> serde_json::Value {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("{\"summary\""))
        .unwrap_or_else(|| panic!("no JSON summary on stderr: {stderr}"));
    let mut v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bad summary {line}: {e}"));
    v["summary"].take()
}

/// `kernel.bpf_stats_enabled`: while it is 1, each BPF program's fdinfo counts its runs and
/// their time (two clock reads per run, so it is on only while measured).
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// BPF statistics on until dropped, then as they were.
pub struct BpfStats(String);

impl BpfStats {
    pub fn enable() -> std::io::Result<BpfStats> {
        let before = std::fs::read_to_string(BPF_STATS).unwrap_or_else(|_| "0".into());
        std::fs::write(BPF_STATS, "1")?;
        Ok(BpfStats(before.trim().to_string()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, &self.0);
    }
}

/// Run time (ns) and run count of every BPF program process `pid` holds, from their fdinfo
/// (counted while [`BpfStats`] is on).
pub fn bpf_run_stats(pid: u32) -> std::io::Result<(u64, u64)> {
    let (mut ns, mut runs) = (0, 0);
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let info = std::fs::read_to_string(e?.path()).unwrap_or_default();
        let field = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(t), Some(c)) = (field("run_time_ns:"), field("run_cnt:")) {
            ns += t;
            runs += c;
        }
    }
    Ok((ns, runs))
}

pub fn within(actual: u64, expected: u64, pct: f64) -> bool {
    (actual as f64 - expected as f64).abs() <= expected as f64 * pct / 100.0
}

/// Starts a workload that sets up its memory, prints `ready pid=N key=value...` and waits for a
/// line on stdin; returns it held (end it with [`Held::go`]) and what that line said.
pub fn hold(cmd: &mut Command) -> (Held, HashMap<String, String>) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn workload");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let said = kv(&line);
    let pid = num(&said, "pid") as u32;
    (Held { child, pid }, said)
}

/// Runs `pfault ARGS --output OUT -- WORKLOAD WARGS` to completion, failing the test if pfault
/// fails, and returns the `key=value` ground truth the workload printed.
pub fn pfault_on(args: &[&str], out: &Path, workload_name: &str, wargs: &[&str]) -> HashMap<String, String> {
    pfault_on_program(args, out, &workload(workload_name), wargs).0
}

/// [`pfault_on`] for any program; also returns pfault's stderr.
pub fn pfault_on_program(
    args: &[&str],
    out: &Path,
    program: &Path,
    wargs: &[&str],
) -> (HashMap<String, String>, String) {
    let run = run_with_timeout(
        pfault()
            .args(args)
            .arg("--output")
            .arg(out)
            .arg("--")
            .arg(program)
            .args(wargs),
        Duration::from_secs(300),
    );
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "pfault {args:?} failed: {stderr}");
    (kv(&String::from_utf8_lossy(&run.stdout)), stderr)
}

/// The faults `go tool pprof -top` counts in `function` itself (its flat count) in a pprof
/// profile; fails the test if it shows no such function.
pub fn pprof_flat(profile: &Path, function: &str) -> u64 {
    let run = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(profile)
        .output()
        .expect("go tool pprof");
    let top = String::from_utf8_lossy(&run.stdout);
    top.lines()
        .find(|l| l.split_whitespace().last() == Some(function))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {function} in go tool pprof -top:\n{top}{}", stderr_of(&run)))
}

/// `comm;root;...;leaf COUNT` lines as (stack, count); a stack printed twice fails the test.
pub fn folded_lines(folded: &str) -> Vec<(String, u64)> {
    let mut seen = std::collections::HashSet::new();
    folded
        .lines()
        .map(|l| {
            let (stack, n) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad folded line {l:?}"));
            assert!(seen.insert(stack.to_string()), "stack printed twice: {stack}");
            (stack.to_string(), n.parse().unwrap())
        })
        .collect()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` from a server on 127.0.0.1 (HTTP/1.0, so the server closes when done):
/// the status and the body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let status = String::from_utf8_lossy(&raw[..end])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    Ok((status, raw[end + 4..].to_vec()))
}

/// `s` with everything but letters, digits and `-_.~` percent-encoded, for a URL's query.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The resident set of process `pid`, KiB (`VmRSS` in /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A fresh cgroup under the cgroup2 mount, removed when dropped.
pub struct TestCgroup {
    pub dir: PathBuf,
    /// As /proc/PID/cgroup names it.
    pub name: String,
}

impl TestCgroup {
    pub fn new(tag: &str) -> TestCgroup {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = info
            .lines()
            .find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                (right.split_whitespace().next()? == "cgroup2")
                    .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
            })
            .expect("no cgroup v2 mount");
        let name = format!("/pfault-test-{tag}-{}", std::process::id());
        let dir = root.join(&name[1..]);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TestCgroup { dir, name }
    }

    /// Moves process `pid` in.
    pub fn enter(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.dir.display()));
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}
