//! `pfault exporter` with the real clients: a Prometheus server scraping it, its pprof
//! endpoint, and a soak of many short-lived processes with distinct names.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use pfault_tests::*;
use serde_json::Value;

/// A child killed (SIGTERM, then SIGKILL) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` until it says yes or `limit` passes.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn exporter(port: u16, more: &[&str]) -> Attached {
    Attached::start(
        pfault()
            .args([
                "exporter",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--collect-every",
                "0.5",
            ])
            .args(more),
    )
}

/// `workload` under a name of its own: its comm is the binary's basename.
fn renamed(workload_name: &str, name: &str) -> std::path::PathBuf {
    let dir = scratch(&format!("exporter-{name}"));
    let bin = dir.join(name);
    std::fs::copy(workload(workload_name), &bin).unwrap();
    bin
}

fn renamed_workload(name: &str) -> std::path::PathBuf {
    renamed("anon_writer", name)
}

/// The exporter's `pfault_page_faults_total` for `comm`, by (kind, mode).
fn faults_by_kind_and_mode(port: u16, comm: &str) -> std::collections::HashMap<(String, String), u64> {
    let (status, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let prefix = format!("pfault_page_faults_total{{comm=\"{comm}\",kind=\"");
    String::from_utf8(body)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (kind, rest) = rest.split_once('"')?;
            let mode = rest.strip_prefix(",mode=\"")?.split_once('"')?.0;
            let n = l.rsplit_once(' ')?.1.parse::<f64>().ok()? as u64;
            Some(((kind.to_string(), mode.to_string()), n))
        })
        .collect()
}

/// The mode label, without latencies (counts from the kernel's accounting, each move given
/// the mode of the exception before it) and with them (each fault timed): the workload's
/// faults in read(2)'s copy to user space are kernel-mode, its own writes user-mode, as its
/// getrusage around each phase says.
#[test]
fn the_mode_label_tells_kernel_from_user_faults() {
    if !root_or_skip() {
        return;
    }
    for (i, more) in [&[][..], &["-L"][..]].into_iter().enumerate() {
        let name = format!("pfm{i}{}", std::process::id() % 10_000);
        let bin = renamed("kernel_then_user", &name);
        let port = free_port();
        let mut args = vec!["-c", &name];
        args.extend(more);
        let tracer = exporter(port, &args);
        let out = Command::new(&bin).arg("20000").output().unwrap();
        let truth = kv(&String::from_utf8_lossy(&out.stdout));
        let (kernel, user) = (num(&truth, "kernel_minflt"), num(&truth, "user_minflt"));
        let minor = |m: &std::collections::HashMap<(String, String), u64>, mode: &str| {
            m.get(&("minor".to_string(), mode.to_string()))
                .copied()
                .unwrap_or(0)
        };
        let mut seen = Default::default();
        eventually(Duration::from_secs(20), || {
            seen = faults_by_kind_and_mode(port, &name);
            minor(&seen, "kernel") >= kernel && minor(&seen, "user") >= user
        });
        // The process's own start-up (the loader's reads, its first touches) adds to both.
        let report = format!("{more:?}: exporter {seen:?}, getrusage kernel {kernel} user {user}");
        eprintln!("{report}");
        assert!(within(minor(&seen, "kernel"), kernel, 1.0), "{report}");
        assert!(within(minor(&seen, "user"), user, 1.0), "{report}");
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(tracer.pid() as i32, libc::SIGTERM) };
        tracer.wait(Duration::from_secs(10));
    }
}

/// A Prometheus server scraping the exporter every second counts the workload's minor
/// faults within 1% of its getrusage (queried through Prometheus's own API); the pprof
/// endpoint answers a profile, and any other path is 404.
#[test]
fn prometheus_scrapes_the_workloads_faults() {
    if !root_or_skip() {
        return;
    }
    let (pf_port, prom_port) = (free_port(), free_port());
    let tracer = exporter(pf_port, &[]);
    let dir = scratch("exporter-prometheus");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: pfault\n    static_configs:\n      - targets: ['127.0.0.1:{pf_port}']\n"
        ),
    )
    .unwrap();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's prometheus package)"),
    );
    assert!(
        eventually(Duration::from_secs(30), || http_get(prom_port, "/-/ready")
            .is_ok_and(|(s, _)| s == 200)),
        "Prometheus did not come up"
    );
    let name = format!("pfx{}", std::process::id() % 100_000);
    let out = Command::new(renamed_workload(&name))
        .arg("20000")
        .output()
        .unwrap();
    let minflt = num(&kv(&String::from_utf8_lossy(&out.stdout)), "minflt");
    let query = format!("sum(pfault_page_faults_total{{comm=\"{name}\",kind=\"minor\"}})");
    let mut seen = 0;
    let counted = eventually(Duration::from_secs(30), || {
        let Ok((200, body)) = http_get(prom_port, &format!("/api/v1/query?query={}", url_encode(&query)))
        else {
            return false;
        };
        let v: Value = serde_json::from_slice(&body).unwrap();
        seen = v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        seen >= minflt
    });
    assert!(
        counted || within(seen, minflt, 1.0),
        "Prometheus says {seen}, getrusage {minflt}"
    );
    assert!(
        within(seen, minflt, 1.0),
        "Prometheus says {seen}, getrusage {minflt}"
    );
    let (status, profile) = http_get(pf_port, "/debug/pprof/faults?seconds=1").unwrap();
    assert_eq!(status, 200);
    assert_eq!(&profile[..2], &[0x1f, 0x8b], "not gzip");
    assert_eq!(http_get(pf_port, "/nothing/here").unwrap().0, 404);
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGTERM) };
    tracer.wait(Duration::from_secs(10));
}

/// Two minutes of short-lived processes, each with a name of its own, scraped as Prometheus
/// would: the exporter's memory stays flat, its series stop at the cap, and the kernel's
/// per-process map never fills.
#[test]
fn memory_stays_flat_under_a_stream_of_new_process_names() {
    if !root_or_skip() {
        return;
    }
    let port = free_port();
    let tracer = exporter(port, &["--max-series", "300", "--by-file", "-L"]);
    let named = workload("named");
    let start = Instant::now();
    let mut warm_rss = 0;
    let mut text = String::new();
    let mut spawned = 0u64;
    while start.elapsed() < Duration::from_secs(120) {
        for _ in 0..20 {
            let status = Command::new(&named)
                .args([format!("n{spawned}"), "50".into()])
                .status()
                .unwrap();
            assert!(status.success());
            spawned += 1;
        }
        let (status, body) = http_get(port, "/metrics").unwrap();
        assert_eq!(status, 200);
        text = String::from_utf8(body).unwrap();
        if warm_rss == 0 && start.elapsed() > Duration::from_secs(30) {
            warm_rss = rss_kib(tracer.pid());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let end_rss = rss_kib(tracer.pid());
    eprintln!("exporter RSS {warm_rss} KiB after 30 s, {end_rss} KiB after {spawned} processes");
    let series = text
        .lines()
        .filter(|l| l.starts_with("pfault_page_faults_total{"))
        .count();
    assert!(spawned > 2000, "only {spawned} processes");
    assert!(series <= 300 + 6, "{series} series past the cap of 300");
    assert!(text.contains("comm=\"_other\""), "nothing past the cap");
    assert!(
        text.lines()
            .any(|l| l.starts_with("pfault_lost_total{what=\"map_full\"} 0")),
        "a map filled:\n{}",
        text.lines()
            .filter(|l| l.contains("lost"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        end_rss <= warm_rss + 2048,
        "RSS grew from {warm_rss} KiB to {end_rss} KiB over {spawned} processes"
    );
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGTERM) };
    tracer.wait(Duration::from_secs(10));
}

/// A profile's length out of range, or not a number, is refused with 400 in words saying the
/// range, not clamped; a client that gives up frees the profiler at once, not after the
/// profile it asked for would have ended.
#[test]
fn profiles_refuse_bad_lengths_and_end_when_the_client_leaves() {
    if !root_or_skip() {
        return;
    }
    let port = free_port();
    let _tracer = exporter(port, &[]);
    for bad in ["99999999", "0", "abc", "-1"] {
        let (status, body) = http_get(port, &format!("/debug/pprof/faults?seconds={bad}")).unwrap();
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "seconds={bad}: {body}");
        assert!(body.contains("from 1 to 300"), "seconds={bad}: {body}");
    }
    // A 30 s profile whose client leaves after 1 s.
    let mut leaving = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(
        &mut leaving,
        b"GET /debug/pprof/faults?seconds=30 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    drop(leaving);
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let (status, body) = http_get(port, "/debug/pprof/faults?seconds=1").unwrap();
    assert_eq!(
        status,
        200,
        "the profiler is still held: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
}

/// A profile running while hundreds of short processes come and go, each with one of 100
/// binaries of its own (the same comm, so the profile's rows do not grow): the exporter's
/// memory stays flat once warm, as the processes' stacks, maps and parsed binaries are let go
/// when they are gone, not held to the profile's end (3.6 MiB per 100 processes before), and
/// the profile names the workload's stacks.
#[test]
fn a_profile_does_not_grow_with_process_churn() {
    if !root_or_skip() {
        return;
    }
    let comm = format!("pfch{}", std::process::id() % 100_000);
    let dir = scratch("exporter-churn");
    let bins: Vec<_> = (0..100)
        .map(|i| {
            let sub = dir.join(format!("d{i}"));
            std::fs::create_dir_all(&sub).unwrap();
            let bin = sub.join(&comm);
            std::fs::copy(workload("anon_writer"), &bin).unwrap();
            bin
        })
        .collect();
    let port = free_port();
    let tracer = exporter(port, &["-c", &comm]);
    std::thread::sleep(Duration::from_millis(500));
    let profile = std::thread::spawn(move || http_get(port, "/debug/pprof/faults?seconds=25"));
    std::thread::sleep(Duration::from_millis(500));
    let mut warm_rss = 0;
    for i in 0..800 {
        let out = Command::new(&bins[i % bins.len()]).arg("200").output().unwrap();
        assert!(out.status.success());
        if i == 300 {
            // Warm: a fold or two has run, and with it the one-off parse of the kernel's
            // symbols.
            std::thread::sleep(Duration::from_millis(1500));
            warm_rss = rss_kib(tracer.pid());
        }
    }
    // A fold or two: what is held of the last processes to exit is let go.
    std::thread::sleep(Duration::from_secs(2));
    let end_rss = rss_kib(tracer.pid());
    eprintln!("exporter RSS {warm_rss} KiB after 300 processes, {end_rss} KiB after 800");
    // Before the fix it grew 4 MiB per 100 processes: 20 MiB here.
    assert!(
        end_rss <= warm_rss + 8192,
        "RSS grew from {warm_rss} KiB to {end_rss} KiB over 500 processes during a profile"
    );
    let (status, body) = profile.join().unwrap().unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let gz = dir.join("profile.pb.gz");
    std::fs::write(&gz, &body).unwrap();
    let text = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap().stdout;
    assert!(
        text.windows(b"touch_pages".len()).any(|w| w == b"touch_pages"),
        "the workload's function is not in the profile"
    );
}

/// The profile names JIT code from the perf map its process wrote as it exited, before the
/// profile's end: the map is read when the gone process's stacks are named.
#[test]
fn a_profile_names_jit_code_from_its_perf_map() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("exporter-jit");
    let port = free_port();
    let tracer = exporter(port, &["-c", "jit_writer"]);
    let profile = std::thread::spawn(move || http_get(port, "/debug/pprof/faults?seconds=6"));
    // A profile loads an engine of its own when asked, and says its probe mode once attached.
    tracer.wait_for_stderr("probe mode", Duration::from_secs(10));
    let out = Command::new(workload("jit_writer"))
        .args(["5000", "perfmap-at-exit"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let said = kv(&String::from_utf8_lossy(&out.stdout));
    let (status, body) = profile.join().unwrap().unwrap();
    let _ = std::fs::remove_file(format!("/tmp/perf-{}.map", num(&said, "pid")));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let gz = dir.join("profile.pb.gz");
    std::fs::write(&gz, &body).unwrap();
    let flat = pprof_flat(&gz, "pfault_jit_store");
    let minflt = num(&said, "minflt");
    assert!(within(flat, minflt, 1.0), "pprof: {flat}, getrusage {minflt}");
}
