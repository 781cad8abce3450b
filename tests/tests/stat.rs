//! `pfault stat` against real workloads, checked against their own getrusage.

use std::time::Duration;

use pfault_tests::*;

#[test]
fn forked_child_copy_on_write_faults_get_their_own_row() {
    let dir = scratch("stat-cow");
    let out = dir.join("stat.json");
    let truth = pfault_on(&["stat", "-o", "json"], &out, "fork_cow", &["10000"]);
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
    let lat = &c["latency_ns"];
    let (p50, p99, max) = (
        lat["p50"].as_u64().unwrap(),
        lat["p99"].as_u64().unwrap(),
        lat["max"].as_u64().unwrap(),
    );
    assert!(0 < p50 && p50 <= p99 && p99 <= max * 11 / 10, "{lat}");
    // The parent wrote the same pages first: its faults are its own row.
    assert!(row(parent)["minor"].as_u64().unwrap() >= 10000);
}

#[test]
fn command_exit_status_becomes_pfaults_and_errors_are_counted() {
    let run = run_with_timeout(
        pfault().args(["stat", "-o", "json", "--"]).arg(workload("segv")),
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

#[test]
fn hist_draws_log2_buckets() {
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

#[test]
fn needs_a_target() {
    let run = run_with_timeout(pfault().args(["stat"]), Duration::from_secs(10));
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("-a") && err.contains("-p PID"), "{err}");
}
