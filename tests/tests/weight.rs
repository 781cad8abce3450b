//! What faults weigh: the bytes of the pages they mapped and their latency, per stack
//! (`stackcount --weight`), per fault (`trace`), per file (`ffaults`), in a pprof profile;
//! checked against what the workloads say the kernel mapped and how long they took.

use std::{path::Path, process::Command, time::Duration};

use pfault_tests::*;
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// Is THP on for `madvise(MADV_HUGEPAGE)` regions here? (`always` or `madvise`.)
fn thp_madvise() -> bool {
    let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    let on = mode.contains("[always]") || mode.contains("[madvise]");
    if !on {
        eprintln!("skipped: transparent huge pages are off here ({})", mode.trim());
    }
    on
}

/// The JSON stack whose user stack's leaf is `leaf`.
fn stack_with_leaf<'a>(stacks: &'a [Value], leaf: &str) -> &'a Value {
    stacks
        .iter()
        .find(|s| s["ustack"][0]["symbol"] == leaf)
        .unwrap_or_else(|| panic!("no stack with leaf {leaf} in {stacks:?}"))
}

/// What `thp_writer MIB MODE` mapped, as it says from its own smaps: (bytes, faults its
/// loop took to map them: one per THP, one per 4 KiB page besides).
fn mapped(truth: &std::collections::HashMap<String, String>) -> (u64, u64) {
    let (rss, huge) = (num(truth, "rss_kib") * 1024, num(truth, "huge_kib") * 1024);
    (rss, huge / (2 * MIB) + (rss - huge) / 4096)
}

/// 64 MiB written through transparent huge pages weighs 64 MiB in about 32 faults; written
/// a 4 KiB page at a time, 64 MiB in 16,384 faults. Both against the workload's smaps.
#[test]
fn stacks_weigh_the_bytes_their_faults_mapped_huge_or_not() {
    if !root_or_skip() || !thp_madvise() {
        return;
    }
    let dir = scratch("weight-bytes");
    for (mode, max_faults) in [("huge", 40), ("small", 16_400)] {
        let out = dir.join(format!("{mode}.json"));
        let truth = pfault_on(
            &["stackcount", "-U", "--weight", "bytes", "-o", "json"],
            &out,
            "thp_writer",
            &["64", mode],
        );
        let (bytes, faults) = mapped(&truth);
        assert!(
            within(bytes, 64 * MIB, 0.1),
            "{mode}: the workload says it mapped {bytes} bytes"
        );
        if mode == "huge" {
            assert!(
                num(&truth, "huge_kib") >= 60 * 1024,
                "the kernel gave the workload few huge pages: {truth:?}"
            );
        }
        let stacks = json_lines(&out);
        let s = stack_with_leaf(&stacks, "touch_region");
        let (n, weighed) = (s["count"].as_u64().unwrap(), s["bytes"].as_u64().unwrap());
        assert!(
            within(weighed, bytes, 2.0),
            "{mode}: touch_region weighs {weighed} bytes, the workload mapped {bytes}"
        );
        assert!(
            within(n, faults, 2.0) && n <= max_faults,
            "{mode}: touch_region took {n} faults, the workload's smaps say {faults}"
        );
    }
}

/// `trace` gives each fault's page size: those of the workload's region add up to what it
/// mapped, in 2 MiB pages where it got huge ones.
#[test]
fn trace_shows_each_faults_page_size() {
    if !root_or_skip() || !thp_madvise() {
        return;
    }
    let dir = scratch("weight-trace");
    let out = dir.join("trace.json");
    let truth = pfault_on(&["trace", "-o", "json"], &out, "thp_writer", &["16", "huge"]);
    let (start, end) = (num(&truth, "start"), num(&truth, "end"));
    let (bytes, _) = mapped(&truth);
    let sizes: Vec<u64> = json_lines(&out)
        .iter()
        .filter(|e| (start..end).contains(&e["addr"].as_u64().unwrap_or(0)))
        .map(|e| {
            e["page_size"]
                .as_u64()
                .unwrap_or_else(|| panic!("no page_size in {e}"))
        })
        .collect();
    assert_eq!(sizes.iter().sum::<u64>(), bytes, "page sizes {sizes:?}");
    let huge = sizes.iter().filter(|&&s| s == 2 * MIB).count() as u64;
    assert_eq!(huge * 2048, num(&truth, "huge_kib"), "page sizes {sizes:?}");
}

/// `ffaults -o json` and `stat -L -o json` say what the faults mapped, not a page per fault:
/// the workload's 64 MiB of huge pages, and a few pages of its own besides.
#[test]
fn ffaults_and_stat_bytes_are_the_pages_mapped() {
    if !root_or_skip() || !thp_madvise() {
        return;
    }
    let dir = scratch("weight-rows");
    for (tool, row) in [
        (&["ffaults", "-o", "json"][..], "[anon]"),
        (&["stat", "-L", "-o", "json"], ""),
    ] {
        let out = dir.join(format!("{}.json", tool[0]));
        let truth = pfault_on(tool, &out, "thp_writer", &["64", "huge"]);
        let (bytes, _) = mapped(&truth);
        let rows = json_lines(&out);
        let r = rows
            .iter()
            .find(|r| row.is_empty() || r["file"] == row)
            .unwrap_or_else(|| panic!("{tool:?}: no row {row} in {rows:?}"));
        let weighed = r["bytes"]
            .as_u64()
            .unwrap_or_else(|| panic!("{tool:?}: no bytes in {r}"));
        assert!(
            weighed >= bytes && within(weighed, bytes, 2.0),
            "{tool:?}: {weighed} bytes, the workload's region {bytes}: {r}"
        );
    }
}

/// Sum of `latency_ns` over the trace events of `pid` that completed in mappings `mapping`
/// picks, and their number.
fn traced_latency(out: &Path, pid: u64, mapping: impl Fn(&str) -> bool) -> (u64, u64) {
    json_lines(out)
        .iter()
        .filter(|e| e["pid"].as_u64() == Some(pid) && mapping(e["mapping"].as_str().unwrap_or("")))
        .filter_map(|e| e["latency_ns"].as_u64())
        .fold((0, 0), |(sum, n), l| (sum + l, n + 1))
}

/// 16,384 cheap minor faults beside 4,096 major ones (a file read at random after it was
/// dropped from the page cache): weighed by latency, the major path's share is at least twice
/// its share of faults, and the latency total is what `trace` timed fault by fault in the
/// same run.
///
/// Both tools trace the same run of the workload, so they time the same faults, and a fault
/// that waited (on the disk, on a CPU the host's other work held) waited for both. Their
/// probes nest: the tracepoint runs its programs oldest first, the perf event newest first,
/// so the first tool attached times from before the second's entry probe to after its
/// completion probe. stackcount attaches first: its latencies also hold trace's own probes,
/// about 0.7 us per fault (7% of this workload's total, 1.4% of the major path's). The
/// kernel's BPF statistics say how long trace's programs ran; the total must be trace's plus
/// that, within 5%, and the major path trace's within 5%.
#[test]
fn latency_weighs_major_faults_by_their_time() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("weight-latency");
    let (stacks_out, trace_out) = (dir.join("stacks.json"), dir.join("trace.json"));
    let data = dir.join("data");
    let mut held = Held::start(
        Command::new(workload("mixed_faults"))
            .arg(&data)
            .args(["16384", "4096", "wait", "linger"]),
    );
    let pid = held.pid as u64;
    let stats = BpfStats::enable().expect("kernel.bpf_stats_enabled");
    let stackcount = Attached::start(
        pfault()
            .args([
                "stackcount",
                "-U",
                "--weight",
                "latency",
                "-o",
                "json",
                "--output",
            ])
            .arg(&stacks_out)
            .args(["-p", &pid.to_string()]),
    );
    let trace = Attached::start(
        pfault()
            .args(["trace", "-o", "json", "--output"])
            .arg(&trace_out)
            .args(["-p", &pid.to_string()]),
    );
    let (probes_before, _) = bpf_run_stats(trace.pid()).unwrap();
    held.release();
    let truth = held.lingering();
    let (probes_after, _) = bpf_run_stats(trace.pid()).unwrap();
    drop(stats);
    let trace_probes = probes_after - probes_before;
    held.finish();
    let trace_err = trace.wait(Duration::from_secs(60));
    stackcount.wait(Duration::from_secs(60));
    assert_eq!(summary(&trace_err)["lost"]["ringbuf"], 0, "{trace_err}");
    assert_eq!(
        num(&truth, "majflt"),
        4096,
        "the file's pages were not all read from disk: {truth:?}"
    );
    let stacks = json_lines(&stacks_out);
    let field = |s: &Value, k: &str| s[k].as_u64().unwrap_or_else(|| panic!("no {k} in {s}"));
    let (anon, file) = (
        stack_with_leaf(&stacks, "touch_anon"),
        stack_with_leaf(&stacks, "read_file"),
    );
    assert_eq!(field(anon, "count"), num(&truth, "anon_faults"));
    assert_eq!(field(file, "count"), num(&truth, "file_faults"));
    let (faults, latency) = stacks
        .iter()
        .map(|s| (field(s, "count"), field(s, "latency_ns")))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let fault_share = field(file, "count") as f64 / faults as f64;
    let latency_share = field(file, "latency_ns") as f64 / latency as f64;
    assert!(
        latency_share >= 2.0 * fault_share,
        "read_file: {:.1}% of the faults, {:.1}% of their latency",
        fault_share * 100.0,
        latency_share * 100.0
    );
    let data_path = data.to_str().unwrap().to_string();
    let (traced_file, file_events) = traced_latency(&trace_out, pid, |m| m == data_path);
    assert_eq!(file_events, field(file, "count"));
    assert!(
        within(field(file, "latency_ns"), traced_file, 5.0),
        "read_file's latency {} ns, trace's faults on the file add up to {traced_file} ns",
        field(file, "latency_ns")
    );
    let (traced, events) = traced_latency(&trace_out, pid, |_| true);
    assert_eq!(events, faults, "trace saw {events} faults, stackcount {faults}");
    let report = format!(
        "stackcount's latency total {latency} ns, trace's per-fault latencies add up to {traced} ns, \
         trace's programs ran {trace_probes} ns"
    );
    eprintln!("{report}");
    assert!(traced <= latency, "{report}");
    assert!(within(latency, traced + trace_probes, 5.0), "{report}");
}

/// `function`'s flat value in the pprof profile `file` under `-sample_index=index`, printed
/// in `unit` ("" for a count).
fn pprof_flat(file: &Path, index: &str, unit: &str, function: &str) -> u64 {
    let mut cmd = Command::new("go");
    cmd.args(["tool", "pprof", &format!("-sample_index={index}"), "-top"]);
    if !unit.is_empty() {
        cmd.arg(format!("-unit={unit}"));
    }
    let run = cmd.arg(file).output().expect("go tool pprof");
    let top = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "go tool pprof -sample_index={index}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(top.contains(&format!("Type: {index}")), "{top}");
    top.lines()
        .find(|l| l.split_whitespace().last() == Some(function))
        .and_then(|l| l.split_whitespace().next()?.strip_suffix(unit)?.parse().ok())
        .unwrap_or_else(|| panic!("no {function} in {unit} in:\n{top}"))
}

/// One profile carries the three weights: `go tool pprof` reads each by its name, and each
/// puts the workload's function on top with the workload's own numbers.
#[test]
fn pprof_carries_faults_latency_and_bytes() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("weight-pprof");
    let out = dir.join("faults.pb.gz");
    let truth = pfault_on(
        &["stackcount", "-U", "-o", "pprof"],
        &out,
        "thp_writer",
        &["16", "small"],
    );
    let (bytes, faults) = mapped(&truth);
    let n = pprof_flat(&out, "faults", "", "touch_region");
    assert!(
        within(n, faults, 2.0),
        "touch_region: {n} faults, the workload took {faults}"
    );
    let b = pprof_flat(&out, "bytes", "B", "touch_region");
    assert!(
        within(b, bytes, 2.0),
        "touch_region: {b} bytes, the workload mapped {bytes}"
    );
    assert!(
        pprof_flat(&out, "latency", "ns", "touch_region") > 0,
        "touch_region: no latency"
    );
}

/// The exporter's `/debug/pprof/faults` carries the three weights too: a THP workload run
/// during the profile weighs what it mapped.
#[test]
fn exporter_profiles_carry_the_three_weights() {
    if !root_or_skip() || !thp_madvise() {
        return;
    }
    let dir = scratch("weight-exporter");
    // A name of its own: the exporter profiles only it.
    let comm = format!("thpw{}", std::process::id() % 100_000);
    let bin = dir.join(&comm);
    std::fs::copy(workload("thp_writer"), &bin).unwrap();
    let port = free_port();
    let exporter =
        Attached::start(pfault().args(["exporter", "--listen", &format!("127.0.0.1:{port}"), "-c", &comm]));
    let profile = std::thread::spawn(move || http_get(port, "/debug/pprof/faults?seconds=10"));
    // The profile's own engine says its probe mode once attached.
    exporter.wait_for_stderr("probe mode", Duration::from_secs(10));
    // Held before its faults until the profile has read its maps: in the whole suite (not
    // alone, in dozens of runs) a writer that lived a few milliseconds had its own frames
    // unnamed (`thpw+0x154d`), its maps not read before it exited.
    let held = Held::start(Command::new(&bin).args(["16", "huge", "wait"]));
    std::thread::sleep(Duration::from_millis(500));
    let (bytes, _) = mapped(&kv(&held.go()));
    let (status, body) = profile.join().unwrap().unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let out = dir.join("profile.pb.gz");
    std::fs::write(&out, &body).unwrap();
    let b = pprof_flat(&out, "bytes", "B", "touch_region");
    assert!(
        within(b, bytes, 2.0),
        "touch_region: {b} bytes, the workload mapped {bytes}"
    );
    assert!(
        pprof_flat(&out, "latency", "ns", "touch_region") > 0,
        "touch_region: no latency"
    );
}
