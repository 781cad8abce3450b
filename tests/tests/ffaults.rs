//! `pfault ffaults` against real workloads, checked against their own getrusage.

use std::{process::Command, time::Duration};

use pfault_tests::*;
use serde_json::Value;

fn rows_of(path: &std::path::Path, pid: u64) -> Vec<Value> {
    json_lines(path).into_iter().filter(|r| r["pid"] == pid).collect()
}

#[test]
fn file_read_through_mmap_shows_major_faults_under_its_path() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("ffaults-file");
    let data = dir.join("data.bin");
    let pages = 4096u64;
    std::fs::write(&data, vec![7u8; (pages * 4096) as usize]).unwrap();
    std::fs::File::open(&data).unwrap().sync_all().unwrap();
    let out = dir.join("files.json");
    let held = Held::start(Command::new(workload("file_reader")).arg(&data).arg("wait"));
    let tracer = Attached::start(
        pfault()
            .args(["ffaults", "-o", "json", "--output"])
            .arg(&out)
            .args(["-p", &held.pid.to_string()]),
    );
    let truth = kv(&held.go());
    tracer.wait(Duration::from_secs(30));
    let (pid, majflt) = (num(&truth, "pid"), num(&truth, "majflt"));
    let path = data.canonicalize().unwrap();
    let rows = rows_of(&out, pid);
    let row = rows
        .iter()
        .find(|r| r["file"] == path.to_str().unwrap())
        .unwrap_or_else(|| panic!("no row for {path:?}: {rows:?}"));
    let major = row["major"].as_u64().unwrap();
    assert!(
        within(major, majflt, 1.0),
        "{major} major faults on the file, getrusage says {majflt}"
    );
    assert_eq!(
        row["total"].as_u64().unwrap(),
        row["minor"].as_u64().unwrap() + major + row["errors"].as_u64().unwrap()
    );
}

#[test]
fn anonymous_memory_executable_and_libc_are_named() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("ffaults-anon");
    let out = dir.join("files.json");
    let truth = pfault_on(&["ffaults", "-o", "json"], &out, "anon_writer", &["20000"]);
    let (pid, minflt) = (num(&truth, "pid"), num(&truth, "minflt"));
    let rows = rows_of(&out, pid);
    let file = |r: &Value| r["file"].as_str().unwrap().to_string();
    let anon = rows
        .iter()
        .find(|r| r["file"] == "[anon]")
        .unwrap_or_else(|| panic!("no [anon] row: {rows:?}"));
    let minor = anon["minor"].as_u64().unwrap();
    assert!(
        within(minor, minflt, 1.0),
        "[anon] has {minor} minor faults, getrusage says {minflt}"
    );
    assert!(
        rows.iter().any(|r| file(r).ends_with("/anon_writer")),
        "own executable missing: {rows:?}"
    );
    assert!(
        rows.iter().any(|r| file(r).contains("libc.so")),
        "libc missing: {rows:?}"
    );
    assert!(
        rows.iter().all(|r| !file(r).is_empty()),
        "an empty file name: {rows:?}"
    );
}

#[test]
fn text_table_has_a_header_and_sizes() {
    if !root_or_skip() {
        return;
    }
    let run = run_with_timeout(
        pfault()
            .args(["ffaults", "--largest-first", "--top", "3", "--"])
            .arg(workload("anon_writer"))
            .arg("2000"),
        Duration::from_secs(60),
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = String::from_utf8_lossy(&run.stdout);
    let mut lines = text.lines().skip_while(|l| !l.contains("COMM"));
    let header = lines.next().expect("no header");
    for col in ["PID", "COMM", "MINOR", "MAJOR", "PAGES", "BYTES", "FILE"] {
        assert!(header.contains(col), "{header}");
    }
    let first = lines.next().expect("no rows");
    assert!(
        first.contains("[anon]") && first.contains("MiB"),
        "largest first should be [anon] in MiB: {first}"
    );
}
