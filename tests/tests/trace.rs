//! `pfault trace` against real workloads, checked against their own getrusage.

use std::{collections::HashSet, process::Command, time::Duration};

use pfault_tests::*;
use serde_json::Value;

fn events_of(path: &std::path::Path, pid: u64) -> Vec<Value> {
    json_lines(path).into_iter().filter(|e| e["pid"] == pid).collect()
}

fn in_range(e: &Value, start: u64, end: u64) -> bool {
    let a = e["addr"].as_u64().unwrap();
    start <= a && a < end
}

#[test]
fn anon_writer_gives_one_minor_write_fault_per_page() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("trace-anon");
    let out = dir.join("events.json");
    let truth = pfault_on(&["trace", "-o", "json"], &out, "anon_writer", &["20000"]);
    let (pid, minflt) = (num(&truth, "pid"), num(&truth, "minflt"));
    let (start, end) = (num(&truth, "start"), num(&truth, "end"));
    let faults: Vec<Value> = events_of(&out, pid)
        .into_iter()
        .filter(|e| in_range(e, start, end))
        .collect();
    assert!(
        within(faults.len() as u64, minflt, 1.0),
        "{} faults in the mapping, getrusage says {minflt}",
        faults.len()
    );
    let pages: HashSet<u64> = faults.iter().map(|e| e["addr"].as_u64().unwrap() >> 12).collect();
    assert_eq!(pages.len(), faults.len(), "a page faulted twice");
    for e in &faults {
        assert_eq!(e["kind"], "minor", "{e}");
        assert_eq!(e["access"], "write", "{e}");
        assert_eq!(e["mode"], "user", "{e}");
        assert_eq!(e["mapping"], "[anon]", "{e}");
        assert!(e["latency_ns"].as_u64().unwrap() > 0, "{e}");
        assert!(e["ts_ns"].as_u64().unwrap() > 0, "{e}");
    }
}

#[test]
fn file_read_through_mmap_gives_major_faults_mapped_to_its_path() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("trace-file");
    let data = dir.join("data.bin");
    let pages = 4096u64;
    let bytes: Vec<u8> = (0..pages * 4096).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&data, bytes).unwrap();
    std::fs::File::open(&data).unwrap().sync_all().unwrap();
    let out = dir.join("events.json");
    let held = Held::start(Command::new(workload("file_reader")).arg(&data).arg("wait"));
    let tracer = Attached::start(
        pfault()
            .args(["trace", "-o", "json", "--output"])
            .arg(&out)
            .args(["-p", &held.pid.to_string()]),
    );
    let truth = kv(&held.go());
    // With -p, pfault ends by itself when the process exits.
    let stderr = tracer.wait(Duration::from_secs(30));
    assert_eq!(summary(&stderr)["lost"]["ringbuf"], 0, "{stderr}");
    let (pid, majflt) = (num(&truth, "pid"), num(&truth, "majflt"));
    assert!(
        majflt >= pages * 99 / 100,
        "the workload saw only {majflt} major faults: page cache not dropped?"
    );
    let (start, end) = (num(&truth, "start"), num(&truth, "end"));
    let faults: Vec<Value> = events_of(&out, pid)
        .into_iter()
        .filter(|e| in_range(e, start, end))
        .collect();
    let majors: Vec<&Value> = faults.iter().filter(|e| e["kind"] == "major").collect();
    assert!(
        within(majors.len() as u64, majflt, 1.0),
        "{} major faults, getrusage says {majflt}",
        majors.len()
    );
    let path = data.canonicalize().unwrap();
    for e in &majors {
        assert_eq!(e["mapping"], path.to_str().unwrap(), "{e}");
        assert_eq!(e["access"], "read", "{e}");
        let offset = e["offset"].as_u64().unwrap();
        assert_eq!(offset, (e["addr"].as_u64().unwrap() & !0xfff) - start, "{e}");
    }
}

#[test]
fn sigsegv_shows_as_an_error_fault() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("trace-segv");
    let out = dir.join("events.json");
    let run = run_with_timeout(
        pfault()
            .args(["trace", "-o", "json", "--output"])
            .arg(&out)
            .arg("--")
            .arg(workload("segv")),
        Duration::from_secs(60),
    );
    // The command's fate is pfault's exit status: 128 + SIGSEGV.
    assert_eq!(
        run.status.code(),
        Some(139),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let addr = num(&kv(&String::from_utf8_lossy(&run.stdout)), "addr");
    let errors: Vec<Value> = json_lines(&out)
        .into_iter()
        .filter(|e| e["kind"] == "error")
        .collect();
    let hit = errors
        .iter()
        .find(|e| e["addr"] == addr)
        .unwrap_or_else(|| panic!("no error fault at {addr:#x}: {errors:?}"));
    assert_eq!(hit["access"], "write");
    assert_eq!(hit["mapping"], "-");
    assert_eq!(hit["comm"], "segv");
}

#[test]
fn json_trace_keeps_up_with_a_fast_faulter_or_counts_what_it_lost() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("trace-rate");
    let out = dir.join("events.json");
    let run = run_with_timeout(
        pfault()
            .args(["trace", "-o", "json", "--kind", "minor", "--output"])
            .arg(&out)
            .arg("--")
            .arg(workload("anon_writer"))
            .args(["600000", "16384"]),
        Duration::from_secs(300),
    );
    assert!(
        run.status.success(),
        "pfault failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    let truth = kv(&String::from_utf8_lossy(&run.stdout));
    let (pid, minflt, secs) = (
        num(&truth, "pid"),
        num(&truth, "minflt"),
        truth["seconds"].parse::<f64>().unwrap(),
    );
    let summary = summary(&stderr);
    let lost = summary["lost"]["ringbuf"].as_u64().unwrap();
    let seen = json_lines(&out)
        .iter()
        .filter(|e| e["pid"] == pid && e["mapping"] == "[anon]")
        .count() as u64;
    eprintln!(
        "{minflt} faults in {secs:.2}s ({:.0}/s): {seen} traced, {lost} lost",
        minflt as f64 / secs
    );
    assert!(
        within(seen + lost, minflt, 1.0),
        "traced {seen} + lost {lost} != getrusage {minflt}"
    );
}

#[test]
fn user_stacks_of_a_short_lived_command_are_symbolized() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("trace-short");
    let out = dir.join("events.json");
    // About 20 ms of life, over long before pfault prints: its maps are read when it execs.
    // (One that exits within a millisecond or two of exec can still beat the reader.)
    let truth = pfault_on(
        &["trace", "-U", "-o", "json", "--kind", "minor"],
        &out,
        "anon_writer",
        &["5000"],
    );
    let (start, end) = (num(&truth, "start"), num(&truth, "end"));
    let faults: Vec<Value> = events_of(&out, num(&truth, "pid"))
        .into_iter()
        .filter(|e| in_range(e, start, end))
        .collect();
    assert_eq!(faults.len() as u64, 5000);
    for e in &faults {
        let names: Vec<&str> = e["ustack"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["symbol"].as_str())
            .collect();
        assert_eq!(names.get(..2), Some(&["touch_pages", "main"][..]), "{e}");
    }
}

/// Two processes faulting at once, one on each CPU, under `trace -o json --output FILE`:
/// nothing lost, and every fault of each written (its own getrusage).
#[test]
fn a_two_process_storm_is_written_whole() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("trace-storm");
    let out = dir.join("events.json");
    let w = workload("anon_writer");
    let script = format!("{0} 200000 & {0} 200000; wait", w.display());
    let run = run_with_timeout(
        pfault()
            .args(["trace", "-o", "json", "--output"])
            .arg(&out)
            .args(["--", "sh", "-c", &script]),
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert_eq!(summary(&stderr)["lost"]["ringbuf"], 0, "{stderr}");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let said: Vec<_> = stdout.lines().filter(|l| l.starts_with("pid=")).map(kv).collect();
    let ranges: Vec<_> = stdout
        .lines()
        .filter(|l| l.starts_with("start="))
        .map(kv)
        .collect();
    assert_eq!((said.len(), ranges.len()), (2, 2), "{stdout}");
    let events = json_lines(&out);
    for s in &said {
        let pid = num(s, "pid");
        let minflt = num(s, "minflt");
        let n = events.iter().filter(|e| e["pid"] == pid).count() as u64;
        assert!(
            n >= minflt && within(n, minflt, 1.0),
            "{n} events of {pid}, getrusage {minflt}"
        );
    }
}

/// pfault and the traced command writing to one pipe at once: every line is one or the
/// other's, whole.
#[test]
fn lines_stay_whole_when_the_command_shares_stdout() {
    if !root_or_skip() {
        return;
    }
    let w = workload("anon_writer");
    let script = format!(
        "{} 100000 & i=0; while [ $i -lt 3000 ]; do echo workload-line-$i; i=$((i+1)); done; wait",
        w.display()
    );
    // Read as it comes (output() drains both pipes): a pipe left unread would stop both
    // writers.
    let run = pfault()
        .args(["trace", "-o", "json", "--", "sh", "-c", &script])
        .output()
        .expect("pfault");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8_lossy(&run.stdout);
    let (mut events, mut theirs) = (0, 0);
    for line in stdout.lines() {
        if line.starts_with('{') {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("a cut line {line:?}: {e}"));
            assert!(v["pid"].is_u64(), "{line}");
            events += 1;
        } else {
            assert!(
                line.starts_with("workload-line-") || line.starts_with("pid=") || line.starts_with("start="),
                "a line mixed with pfault's: {line:?}"
            );
            theirs += 1;
        }
    }
    // Not every event need arrive: the test reads the pipe no faster than it must, and a
    // full ring buffer drops (and counts) events. What matters here is that lines are whole.
    assert!(
        events > 10_000 && theirs >= 3000,
        "{events} events, {theirs} lines of the command"
    );
}
