//! `--cgroup` and `--by-cgroup` against a child cgroup v2 the test makes: a workload inside is
//! counted (as its own getrusage says), one outside is not.

use std::{collections::HashMap, time::Duration};

use pfault_tests::*;
use serde_json::Value;

/// Runs `pfault ARGS --output FILE -- sh -c ...`, where the command runs anon_writer PAGES
/// inside the cgroup, then another outside it; returns pfault's JSON rows and the two
/// workloads' `key=value` ground truth, inside first.
fn inside_then_outside(
    cg: &TestCgroup,
    args: &[&str],
    pages: &str,
) -> (Vec<Value>, Vec<HashMap<String, String>>) {
    let out = scratch(&format!("cgroup-{}", args[0])).join("rows.json");
    let w = workload("anon_writer");
    // The inner shell moves itself (its own $$) into the cgroup, then becomes the workload.
    let script = format!(
        "sh -c 'echo $$ > {}/cgroup.procs && exec {} {pages}'; {} {pages}",
        cg.dir.display(),
        w.display(),
        w.display()
    );
    let run = run_with_timeout(
        pfault()
            .args(args)
            .arg("--output")
            .arg(&out)
            .args(["--", "sh", "-c", &script]),
        Duration::from_secs(60),
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let said: Vec<_> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter(|l| l.starts_with("pid="))
        .map(kv)
        .collect();
    assert_eq!(said.len(), 2, "{said:?}");
    (json_lines(&out), said)
}

fn pid_rows(rows: &[Value], pid: u64) -> Vec<&Value> {
    rows.iter().filter(|r| r["pid"] == pid).collect()
}

#[test]
fn only_the_process_inside_the_cgroup_is_counted() {
    if !root_or_skip() {
        return;
    }
    let cg = TestCgroup::new("stat");
    let dir = cg.dir.display().to_string();
    let (rows, said) = inside_then_outside(
        &cg,
        &["stat", "--cgroup", &dir, "--by-cgroup", "-o", "json"],
        "20000",
    );
    let (inside, outside) = (&said[0], &said[1]);
    let counted = pid_rows(&rows, num(inside, "pid"));
    assert_eq!(counted.len(), 1, "{rows:?}");
    let minor = counted[0]["minor"].as_u64().unwrap();
    assert!(
        within(minor, num(inside, "minflt"), 1.0),
        "counted {minor}, getrusage {inside:?}"
    );
    assert_eq!(counted[0]["cgroup"], cg.name.as_str());
    assert!(
        pid_rows(&rows, num(outside, "pid")).is_empty(),
        "the process outside was counted: {rows:?}"
    );
    assert!(rows.iter().all(|r| r["cgroup"] == cg.name.as_str()), "{rows:?}");
}

#[test]
fn ffaults_rows_name_their_cgroup() {
    if !root_or_skip() {
        return;
    }
    let cg = TestCgroup::new("ffaults");
    let (rows, said) = inside_then_outside(&cg, &["ffaults", "--by-cgroup", "-o", "json"], "2000");
    let anon = |pid: u64| {
        rows.iter()
            // The same pid was the shell before it exec'd, outside the cgroup.
            .find(|r| r["pid"] == pid && r["comm"] == "anon_writer" && r["file"] == "[anon]")
            .unwrap_or_else(|| panic!("no [anon] row for {pid}: {rows:?}"))
    };
    assert_eq!(anon(num(&said[0], "pid"))["cgroup"], cg.name.as_str());
    assert_ne!(anon(num(&said[1], "pid"))["cgroup"], cg.name.as_str());
}
