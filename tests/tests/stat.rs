//! `pfault stat` against real workloads, checked against their own getrusage.

use std::{
    io::{BufRead, BufReader, Write},
    process::Command,
    time::Duration,
};

use pfault_tests::*;

fn stat_args(timed: bool) -> Vec<&'static str> {
    let mut args = vec!["stat", "-o", "json"];
    if timed {
        args.push("-L");
    }
    args
}

/// Without -L the counts come from the threads' own accounting, with -L from the per-fault
/// probes: both must agree with getrusage.
#[test]
fn forked_child_copy_on_write_faults_get_their_own_row() {
    if !root_or_skip() {
        return;
    }
    for timed in [false, true] {
        child_row_matches_getrusage(timed);
    }
}

fn child_row_matches_getrusage(timed: bool) {
    let dir = scratch(if timed { "stat-cow-timed" } else { "stat-cow" });
    let out = dir.join("stat.json");
    let truth = pfault_on(&stat_args(timed), &out, "fork_cow", &["10000"]);
    let (parent, child, child_minflt) = (num(&truth, "parent"), num(&truth, "child"), num(&truth, "minflt"));
    let rows = json_lines(&out);
    let row = |pid: u64| {
        rows.iter()
            .find(|r| r["pid"] == pid)
            .unwrap_or_else(|| panic!("no row for {pid}: {rows:?}"))
    };
    let c = row(child);
    let minor = c["minor"].as_u64().unwrap();
    assert!(
        within(minor, child_minflt, 1.0),
        "child row has {minor} minor faults, its getrusage says {child_minflt}"
    );
    assert_eq!(c["comm"], "fork_cow");
    // The parent wrote the same pages first: its faults are its own row.
    assert!(row(parent)["minor"].as_u64().unwrap() >= 10000);
    let lat = &c["latency_ns"];
    if !timed {
        assert!(lat.is_null(), "latency without -L: {c}");
        return;
    }
    let (p50, p99, max) = (
        lat["p50"].as_u64().unwrap(),
        lat["p99"].as_u64().unwrap(),
        lat["max"].as_u64().unwrap(),
    );
    assert!(0 < p50 && p50 <= p99 && p99 <= max, "{lat}");
}

#[test]
fn command_exit_status_becomes_pfaults_and_errors_are_counted() {
    if !root_or_skip() {
        return;
    }
    for timed in [false, true] {
        segv_is_an_error(timed);
    }
}

fn segv_is_an_error(timed: bool) {
    let run = run_with_timeout(
        pfault().args(stat_args(timed)).arg("--").arg(workload("segv")),
        Duration::from_secs(60),
    );
    assert_eq!(
        run.status.code(),
        Some(139),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = String::from_utf8_lossy(&run.stdout);
    let row: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["comm"] == "segv")
        .unwrap_or_else(|| panic!("no segv row in {text}"));
    assert_eq!(row["errors"], 1, "{row}");
}

/// A process still alive when pfault reports: its threads' counts are folded in at the report.
#[test]
fn live_process_is_counted_up_to_the_report() {
    if !root_or_skip() {
        return;
    }
    for timed in [false, true] {
        live_row_matches_getrusage(timed);
    }
}

fn live_row_matches_getrusage(timed: bool) {
    let dir = scratch(if timed { "stat-live-timed" } else { "stat-live" });
    let out = dir.join("stat.json");
    let (mut held, _) =
        hold(Command::new(workload("anon_writer")).args(["20000", "20000", "wait", "linger"]));
    let pid = held.pid.to_string();
    let stat = Attached::start(
        pfault()
            .args(stat_args(timed))
            .args(["-d", "3", "-p", &pid, "--output"])
            .arg(&out),
    );
    held.child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut line = String::new();
    BufReader::new(held.child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let minflt = num(&kv(&line), "minflt");
    stat.wait(Duration::from_secs(30));
    // Only now may the workload exit: the report above was of a live process.
    held.child.stdin.as_mut().unwrap().write_all(b"done\n").unwrap();
    assert!(held.child.wait().unwrap().success());
    let rows = json_lines(&out);
    let row = rows
        .iter()
        .find(|r| r["pid"] == held.pid)
        .unwrap_or_else(|| panic!("no row for {pid}: {rows:?}"));
    let minor = row["minor"].as_u64().unwrap();
    assert!(
        within(minor, minflt, 1.0),
        "live row has {minor} minor faults, getrusage says {minflt} (-L: {timed})"
    );
}

#[test]
fn hist_draws_log2_buckets() {
    if !root_or_skip() {
        return;
    }
    let run = run_with_timeout(
        pfault()
            .args(["stat", "--hist", "--"])
            .arg(workload("anon_writer"))
            .arg("5000"),
        Duration::from_secs(60),
    );
    assert!(run.status.success());
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.contains("@latency_us["), "{text}");
    let bars: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('[') && l.contains('|'))
        .collect();
    assert!(!bars.is_empty() && bars.iter().any(|l| l.contains('@')), "{text}");
}

/// pfault raises its own limit of open files (it holds the binaries it unwinds and names
/// open); the command it starts gets the limit pfault was given, as it would without pfault
/// (a program using select(2) breaks past 1024 descriptors).
#[test]
fn the_command_gets_the_open_files_limit_pfault_was_given() {
    if !root_or_skip() {
        return;
    }
    let mut cmd = pfault();
    cmd.args(["stat", "--", "sh", "-c", "ulimit -Sn; ulimit -Hn"]);
    // SAFETY: one system call between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = 512.min(lim.rlim_max);
            lim.rlim_max = lim.rlim_max.max(4096);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let run = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(run.status.success(), "{}", stderr_of(&run));
    let out = String::from_utf8_lossy(&run.stdout);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("512"), "{out}");
    let hard: u64 = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
    assert!(hard >= 4096, "{out}");
}
