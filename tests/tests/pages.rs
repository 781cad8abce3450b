//! `pfault pages` against workloads holding memory they describe themselves: written
//! anonymous pages, a region the kernel may back with transparent huge pages, and a file read
//! through a mapping.

use std::{path::Path, process::Command, time::Duration};

use pfault_tests::*;
use serde_json::Value;

/// Runs `pfault pages ARGS -o json` into `out`; its flag-set rows and its summary line.
fn pages_json(args: &[String], out: &Path) -> (Vec<Value>, Value) {
    let run = run_with_timeout(
        pfault()
            .arg("pages")
            .args(args)
            .args(["-o", "json", "--output"])
            .arg(out),
        Duration::from_secs(60),
    );
    assert!(
        run.status.success(),
        "pfault pages {args:?} failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (summaries, rows): (Vec<Value>, Vec<Value>) = json_lines(out)
        .into_iter()
        .partition(|l| l.get("summary").is_some());
    assert_eq!(summaries.len(), 1, "one summary line expected: {summaries:?}");
    (rows, summaries[0]["summary"].clone())
}

fn has(row: &Value, flag: &str) -> bool {
    row["flags"].as_array().unwrap().iter().any(|f| f == flag)
}

fn pages_where(rows: &[Value], keep: impl Fn(&Value) -> bool) -> u64 {
    rows.iter()
        .filter(|r| keep(r))
        .map(|r| r["pages"].as_u64().unwrap())
        .sum()
}

fn range_of(said: &std::collections::HashMap<String, String>) -> String {
    format!("{:x}-{:x}", num(said, "start"), num(said, "end"))
}

fn pid_args(pid: u32, more: &[&str]) -> Vec<String> {
    ["-p".to_string(), pid.to_string()]
        .into_iter()
        .chain(more.iter().map(|s| s.to_string()))
        .collect()
}

#[test]
fn written_anonymous_memory_shows_as_resident_anonymous_pages() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("pages-anon");
    let (held, said) = hold(Command::new(workload("pages_anon")).args(["64", "nohuge"]));
    let want = 64 << 20 >> 12;

    let (rows, summary) = pages_json(&pid_args(held.pid, &[]), &dir.join("all.json"));
    let anon = pages_where(&rows, |r| has(r, "anonymous"));
    assert!(
        anon >= want,
        "{anon} anonymous pages, the workload wrote {want}: {rows:?}"
    );
    assert_eq!(summary["pages"], pages_where(&rows, |_| true));
    for r in &rows {
        assert_eq!(r["bytes"], r["pages"].as_u64().unwrap() * 4096, "{r}");
        let hex = r["flags_hex"].as_str().unwrap();
        assert!(hex.starts_with("0x") && hex.len() == 18, "{r}");
        assert!(r.get("mapping").is_none(), "mapping without -m: {r}");
    }

    let range = range_of(&said);
    let (rows, summary) = pages_json(&pid_args(held.pid, &["--range", &range]), &dir.join("range.json"));
    assert_eq!(summary["pages"], want, "{rows:?}");
    for r in &rows {
        assert!(has(r, "anonymous") && has(r, "mmap") && !has(r, "thp"), "{r}");
        assert!(!has(r, "file"), "{r}");
    }
    assert_eq!(summary["thp"]["huge_pages"], 0);
    assert_eq!(summary["swapped"]["pages"], 0);

    let (rows, _) = pages_json(&pid_args(held.pid, &["-m"]), &dir.join("mappings.json"));
    let in_anon = pages_where(&rows, |r| r["mapping"] == "[anon]" && has(r, "anonymous"));
    assert!(in_anon >= want, "{in_anon} anonymous pages in [anon]: {rows:?}");
    assert!(rows.iter().all(|r| r["mapping"].is_string()), "{rows:?}");
    held.go();
}

#[test]
fn a_region_advised_hugepage_shows_transparent_huge_pages() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("pages-thp");
    let (held, said) = hold(Command::new(workload("pages_anon")).args(["32", "huge"]));
    let want = 32 << 20 >> 12;
    let args = pid_args(held.pid, &["--range", &range_of(&said)]);
    let (rows, summary) = pages_json(&args, &dir.join("thp.json"));
    assert_eq!(summary["pages"], want, "{rows:?}");
    assert_eq!(pages_where(&rows, |r| has(r, "anonymous")), want, "{rows:?}");

    let heads = pages_where(&rows, |r| has(r, "thp") && has(r, "compound_head"));
    let tails = pages_where(&rows, |r| has(r, "thp") && has(r, "compound_tail"));
    let text = run_with_timeout(pfault().arg("pages").args(&args), Duration::from_secs(60));
    assert!(text.status.success(), "{}", String::from_utf8_lossy(&text.stderr));
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    let thp_line = text
        .lines()
        .find(|l| l.starts_with("thp"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| panic!("no thp line: {text}"));
    if heads == 0 {
        let setting =
            std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        eprintln!(
            "the kernel gave this MADV_HUGEPAGE region no transparent huge pages \
             (transparent_hugepage/enabled: {}): checked only its base pages",
            setting.trim()
        );
        assert_eq!(pages_where(&rows, |r| has(r, "thp")), 0, "{rows:?}");
        assert!(thp_line.starts_with("thp 0 huge pages"), "{thp_line}");
    } else {
        assert!(tails >= heads, "{heads} heads, {tails} tails: {rows:?}");
        assert_eq!(summary["thp"]["huge_pages"], heads, "{summary}");
        assert_eq!(summary["thp"]["base_pages"], heads + tails, "{summary}");
        assert!(
            thp_line.starts_with(&format!("thp {heads} huge pages, {} base pages", heads + tails)),
            "{thp_line}"
        );
        for r in rows.iter().filter(|r| has(r, "thp")) {
            assert!(has(r, "compound_head") != has(r, "compound_tail"), "{r}");
        }
    }
    held.go();
}

#[test]
fn a_file_read_through_mmap_shows_as_mapped_page_cache() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("pages-file");
    let data = dir.join("data.bin");
    let pages = 4096u64;
    let bytes: Vec<u8> = (0..pages * 4096).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(&data, bytes).unwrap();
    let (held, said) = hold(Command::new(workload("pages_file")).arg(&data));
    let path = data.canonicalize().unwrap();
    let path = path.to_str().unwrap();

    let (rows, _) = pages_json(&pid_args(held.pid, &["-m"]), &dir.join("mappings.json"));
    let of_file: Vec<&Value> = rows.iter().filter(|r| r["mapping"] == path).collect();
    assert_eq!(
        of_file.iter().map(|r| r["pages"].as_u64().unwrap()).sum::<u64>(),
        pages,
        "{rows:?}"
    );
    for r in &of_file {
        assert!(has(r, "mmap") && has(r, "uptodate") && has(r, "file"), "{r}");
        assert!(!has(r, "anonymous") && !has(r, "swapbacked"), "{r}");
    }

    let range = range_of(&said);
    let (rows, summary) = pages_json(&pid_args(held.pid, &["--range", &range]), &dir.join("range.json"));
    assert_eq!(summary["pages"], pages, "{rows:?}");
    assert_eq!(pages_where(&rows, |r| has(r, "anonymous")), 0, "{rows:?}");
    held.go();
}

#[test]
fn text_output_is_a_page_types_table() {
    if !root_or_skip() {
        return;
    }
    let (held, said) = hold(Command::new(workload("pages_anon")).args(["4", "nohuge"]));
    let run = run_with_timeout(
        pfault()
            .arg("pages")
            .args(pid_args(held.pid, &["-m", "--range", &range_of(&said)])),
        Duration::from_secs(60),
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let head: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        head,
        [
            "flags",
            "page-count",
            "MB",
            "symbolic-flags",
            "long-symbolic-flags"
        ],
        "{text}"
    );
    assert_eq!(lines[1], "[anon]", "{text}");
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert!(row[0].starts_with("0x") && row[0].len() == 18, "{text}");
    assert!(row[4].contains("anonymous"), "{text}");
    // One letter per flag: 'a' for anonymous at bit 12, '_' for what is clear.
    assert_eq!(&row[3][11..15], "Ma_b", "{text}");
    let total = lines
        .iter()
        .find(|l| l.trim_start().starts_with("total"))
        .unwrap();
    assert_eq!(
        total.split_whitespace().collect::<Vec<_>>(),
        ["total", "1024", "4"],
        "{text}"
    );
    assert!(text.contains("\nswapped "), "{text}");
    assert!(text.contains("\nshared "), "{text}");
    held.go();
}

#[test]
fn a_missing_pid_is_one_clear_error() {
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let run = run_with_timeout(
        pfault().args(["pages", "-p", &pid.to_string()]),
        Duration::from_secs(30),
    );
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&format!("no such process: {pid}")), "{err}");
}

/// Without CAP_SYS_ADMIN pagemap reads every PFN as 0: pfault says so instead of printing a
/// table of page 0.
#[test]
fn hidden_pfns_are_one_clear_error() {
    if !root_or_skip() {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("setpriv (util-linux) not installed: cannot drop CAP_SYS_ADMIN, skipped");
        return;
    }
    let (held, _) = hold(Command::new(workload("pages_anon")).args(["4", "nohuge"]));
    let bin = pfault().get_program().to_owned();
    let run = run_with_timeout(
        Command::new("setpriv")
            .args(["--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--"])
            .arg(bin)
            .args(["pages", "-p", &held.pid.to_string()]),
        Duration::from_secs(30),
    );
    assert!(!run.status.success(), "{}", String::from_utf8_lossy(&run.stdout));
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("hides page frame numbers") && err.contains("CAP_SYS_ADMIN"),
        "{err}"
    );
    held.go();
}

#[test]
fn a_range_outside_every_mapping_is_refused() {
    if !root_or_skip() {
        return;
    }
    let (held, _) = hold(Command::new(workload("pages_anon")).args(["1", "nohuge"]));
    let run = run_with_timeout(
        pfault().args(["pages", "-p", &held.pid.to_string(), "--range", "1000-2000"]),
        Duration::from_secs(30),
    );
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("no mapping of process"), "{err}");
    held.go();
}
