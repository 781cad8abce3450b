//! `pfault stackcount` against real workloads, checked against their own getrusage.

use std::{process::Command, time::Duration};

use pfault_tests::*;

/// The folded line whose stack ends in `leaf`, and its count.
fn folded_count(folded: &str, leaf: &str) -> Option<(String, u64)> {
    folded
        .lines()
        .find(|l| {
            l.rsplit_once(' ')
                .is_some_and(|(stack, _)| stack.ends_with(&format!(";{leaf}")))
        })
        .map(|l| {
            let (stack, n) = l.rsplit_once(' ').unwrap();
            (stack.to_string(), n.parse().unwrap())
        })
}

#[test]
fn folded_user_stack_counts_match_rusage_after_the_workload_exits() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("stackcount-folded");
    let out = dir.join("folded.txt");
    let held = Held::start(Command::new(workload("anon_writer")).args(["20000", "0", "wait"]));
    let tracer = Attached::start(
        pfault()
            .args(["stackcount", "-U", "--folded", "--output"])
            .arg(&out)
            .args(["-p", &held.pid.to_string()]),
    );
    let truth = kv(&held.go());
    // pfault prints after the workload has exited (-p ends it then): frames must still resolve.
    tracer.wait(Duration::from_secs(30));
    let folded = std::fs::read_to_string(&out).unwrap();
    let minflt = num(&truth, "minflt");
    let (stack, count) =
        folded_count(&folded, "touch_pages").unwrap_or_else(|| panic!("no touch_pages stack in:\n{folded}"));
    assert!(stack.starts_with("anon_writer;"), "comm first: {stack}");
    assert!(
        stack.contains(";main;touch_pages"),
        "main must be named below touch_pages: {stack}"
    );
    assert!(
        within(count, minflt, 1.0),
        "touch_pages counted {count}, getrusage says {minflt}"
    );
}

/// A forked child is announced at the fork, so its stacks are named although it lives only
/// a few milliseconds (counting at completion alone sees no first fault to announce it).
#[test]
fn forked_child_stacks_are_named() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("stackcount-fork");
    let out = dir.join("folded.txt");
    let truth = pfault_on(
        &["stackcount", "-U", "-P", "--folded"],
        &out,
        "fork_cow",
        &["10000"],
    );
    let (child, minflt) = (num(&truth, "child"), num(&truth, "minflt"));
    let folded = std::fs::read_to_string(&out).unwrap();
    let (stack, count) = folded
        .lines()
        .filter(|l| l.starts_with(&format!("fork_cow_[{child}];")))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(stack, n)| (stack, n.parse::<u64>().unwrap()))
        .max_by_key(|(_, n)| *n)
        .unwrap_or_else(|| panic!("no stack of the child {child} in:\n{folded}"));
    assert!(
        within(count, minflt, 1.0),
        "child's top stack counted {count}, its getrusage says {minflt}"
    );
    assert!(
        stack.ends_with(";main"),
        "the child's frames must be named: {stack}"
    );
}

#[test]
fn svg_flame_graph_is_well_formed_and_names_the_function() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("stackcount-svg");
    let svg = dir.join("faults.svg");
    let run = run_with_timeout(
        pfault()
            .args(["stackcount", "-U", "--output", "/dev/null", "--svg"])
            .arg(&svg)
            .arg("--")
            .arg(workload("anon_writer"))
            .arg("5000"),
        Duration::from_secs(60),
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = std::fs::read_to_string(&svg).unwrap();
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&text, opts)
        .unwrap_or_else(|e| panic!("not well-formed SVG: {e}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let titles: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text())
        .collect();
    assert!(
        titles.iter().any(|t| t.starts_with("touch_pages ")),
        "no touch_pages frame in the flame graph"
    );
    assert!(
        titles.iter().any(|t| t.starts_with("minor_fault ")),
        "minor faults not marked"
    );
}

#[test]
fn json_stacks_carry_symbolized_frames() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("stackcount-json");
    let out = dir.join("stacks.json");
    let minflt = num(
        &pfault_on(
            &["stackcount", "-v", "-o", "json"],
            &out,
            "anon_writer",
            &["3000"],
        ),
        "minflt",
    );
    let rows = json_lines(&out);
    let row = rows
        .iter()
        .find(|r| {
            r["ustack"]
                .as_array()
                .unwrap()
                .first()
                .is_some_and(|f| f["symbol"] == "touch_pages")
        })
        .expect("no stack with touch_pages at the leaf");
    assert_eq!(row["kind"], "minor");
    assert_eq!(row["comm"], "anon_writer");
    assert!(within(row["count"].as_u64().unwrap(), minflt, 1.0));
    let leaf = &row["ustack"][0];
    assert!(
        leaf["module"].as_str().unwrap().ends_with("/anon_writer"),
        "{leaf}"
    );
    assert!(
        leaf["file"].as_str().unwrap().ends_with("anon_writer.c"),
        "{leaf}"
    );
    assert!(leaf["line"].as_u64().unwrap() > 0, "{leaf}");
}

/// Folded lines as (stack, count), failing on a stack printed twice.
/// 65,536 distinct call paths, one fault each: every fault keeps its own stack, with the
/// default sizes (the kernel's stack-trace map drops a stack whenever its bucket is taken).
#[test]
fn every_one_of_65536_distinct_stacks_is_counted_on_its_own() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("stackcount-many");
    let out = dir.join("folded.txt");
    let run = run_with_timeout(
        pfault()
            .args(["stackcount", "-U", "-f", "--output"])
            .arg(&out)
            .arg("--")
            .arg(workload("many_stacks")),
        Duration::from_secs(300),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "pfault failed: {stderr}");
    let truth = kv(&String::from_utf8_lossy(&run.stdout));
    let paths = num(&truth, "paths");
    // Folded output ends with a text summary: a line only when something was lost.
    let lost = stderr.lines().find(|l| l.contains("lost")).unwrap_or("");
    let folded = std::fs::read_to_string(&out).unwrap();
    let lines = folded_lines(&folded);
    // Paths differ in the left/right sequence above the leaf.
    let own: Vec<&(String, u64)> = lines
        .iter()
        .filter(|(s, _)| {
            s.ends_with(";walk") && s.matches(";left;").count() + s.matches(";right;").count() == 16
        })
        .collect();
    let faults: u64 = own.iter().map(|(_, n)| n).sum();
    assert!(
        own.len() as u64 * 1000 >= paths * 999 && faults * 1000 >= paths * 999,
        "{} stacks and {faults} faults on their own stack of {paths} paths; lost: {lost}",
        own.len()
    );
    assert!(own.iter().all(|(_, n)| *n == 1), "a path counted twice");
    assert!(lost.is_empty(), "{lost}");
}

/// One function whose loop the compiler unrolled faults at four instructions: every output
/// prints its stack once, with every fault on it; -v keeps the addresses apart.
#[test]
fn an_unrolled_loop_is_one_stack_in_every_format() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("stackcount-unrolled");
    let out = dir.join("out");
    let leaf = "touch_unrolled";
    let truth = pfault_on(&["stackcount", "-U", "-f"], &out, "unrolled", &["8000"]);
    let minflt = num(&truth, "minflt");
    let folded = std::fs::read_to_string(&out).unwrap();
    let on_leaf: Vec<(String, u64)> = folded_lines(&folded)
        .into_iter()
        .filter(|(s, _)| s.ends_with(&format!(";{leaf}")))
        .collect();
    assert_eq!(on_leaf.len(), 1, "{folded}");
    assert!(
        within(on_leaf[0].1, minflt, 1.0),
        "{on_leaf:?}, getrusage says {minflt}"
    );

    pfault_on(&["stackcount", "-U", "-o", "json"], &out, "unrolled", &["8000"]);
    let rows = json_lines(&out);
    let mut seen = std::collections::HashSet::new();
    for r in &rows {
        assert!(
            seen.insert((
                r["comm"].to_string(),
                r["kind"].to_string(),
                r["ustack"].to_string()
            )),
            "twice: {r}"
        );
    }
    let leaf_rows = rows.iter().filter(|r| r["ustack"][0]["symbol"] == leaf).count();
    assert_eq!(leaf_rows, 1, "{rows:?}");

    pfault_on(&["stackcount", "-U"], &out, "unrolled", &["8000"]);
    let text = std::fs::read_to_string(&out).unwrap();
    let blocks: Vec<&str> = text.split("\n\n").filter(|b| b.contains(leaf)).collect();
    assert_eq!(blocks.len(), 1, "{text}");

    // The test can fail: with addresses, the four instructions are four stacks.
    pfault_on(
        &["stackcount", "-U", "-v", "-o", "json"],
        &out,
        "unrolled",
        &["8000"],
    );
    let apart = json_lines(&out)
        .iter()
        .filter(|r| r["ustack"][0]["symbol"] == leaf)
        .count();
    assert!(apart >= 2, "the loop was not unrolled: {apart} stack");
}

/// A command that lives a millisecond or two: its libc and loader frames are named, and the
/// kernel's own faults while it loads the program are not shown as unknown user code.
#[test]
fn a_process_that_exits_at_once_has_its_libraries_named() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("stackcount-short");
    let out = dir.join("folded.txt");
    let bin = workload("anon_writer");
    let script = format!("for i in 1 2 3 4 5; do {} 20 >/dev/null; done", bin.display());
    let run = run_with_timeout(
        pfault()
            .args(["stackcount", "-U", "-f", "--output"])
            .arg(&out)
            .args(["--", "sh", "-c", &script]),
        Duration::from_secs(60),
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let folded = std::fs::read_to_string(&out).unwrap();
    let lines = folded_lines(&folded);
    let (stack, n) = lines
        .iter()
        .find(|(s, _)| s.starts_with("anon_writer;") && s.ends_with(";touch_pages"))
        .unwrap_or_else(|| panic!("no touch_pages stack:\n{folded}"));
    assert!(stack.contains("__libc_start_call_main;"), "libc unnamed: {stack}");
    assert!(
        *n >= 5 * 20,
        "{stack} {n}: the five processes' stacks are one line"
    );
    let loader = lines
        .iter()
        .filter(|(s, _)| s.starts_with("anon_writer;_start;_dl_"))
        .count();
    assert!(loader > 0, "no ld.so stack named:\n{folded}");
    // The kernel's writes to the new image during execve: named, and not charged to the
    // frame of the program that called execve.
    assert!(
        lines
            .iter()
            .any(|(s, _)| s == "anon_writer;[execve:_the_kernel_writing_the_new_image]"),
        "no execve line:\n{folded}"
    );
    assert!(
        !lines
            .iter()
            .any(|(s, _)| s.starts_with("anon_writer;") && s.contains("execve") && !s.contains("[execve")),
        "an execve fault on the old image's stack:\n{folded}"
    );
}

/// A real program, Debian's Python importing twenty standard modules: no stack lost, none
/// printed twice, and every fault it had by the end counted (its own getrusage).
#[test]
fn python_importing_twenty_modules_loses_no_stack() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("stackcount-python");
    let out = dir.join("folded.txt");
    let modules = "json, decimal, asyncio, email.mime.text, http.client, xml.dom.minidom, sqlite3, \
                   csv, argparse, logging.handlers, unittest, pathlib, subprocess, tarfile, zipfile, \
                   statistics, fractions, difflib, pprint, urllib.request";
    let script = format!(
        "import {modules}, resource\nr = resource.getrusage(resource.RUSAGE_SELF)\nprint(f'faults={{r.ru_minflt + r.ru_majflt}}')"
    );
    let run = run_with_timeout(
        pfault()
            .args(["stackcount", "-U", "-f", "--output"])
            .arg(&out)
            .args(["--", "/usr/bin/python3", "-c", &script]),
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(!stderr.contains("lost"), "{stderr}");
    let truth = num(&kv(&String::from_utf8_lossy(&run.stdout)), "faults");
    let folded = std::fs::read_to_string(&out).unwrap();
    let lines = folded_lines(&folded);
    assert!(
        !folded.contains("[stack lost") && !folded.contains("[stack not received]"),
        "{folded}"
    );
    let counted: u64 = lines
        .iter()
        .filter(|(s, _)| s.starts_with("python3;"))
        .map(|(_, n)| n)
        .sum();
    // Counted until it exits: the faults after its getrusage (printing, exit) come on top.
    let elsewhere: Vec<&(String, u64)> = lines.iter().filter(|(s, _)| !s.starts_with("python3;")).collect();
    assert!(
        truth <= counted && counted <= truth + truth / 20,
        "pfault counted {counted} faults of python3, getrusage says {truth} before its exit; \
         the other lines: {elsewhere:?}\n{stderr}"
    );
}

/// `-o pprof` writes a profile the real client reads: `go tool pprof` shows the faulting
/// function with the workload's own count, the program's mapping with its build id, and the
/// comm, kind and pid labels.
#[test]
fn pprof_profile_reads_in_go_tool_pprof() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("stackcount-pprof");
    let out = dir.join("faults.pb.gz");
    let truth = pfault_on(
        &["stackcount", "-U", "-P", "-o", "pprof"],
        &out,
        "anon_writer",
        &["20000"],
    );
    let minflt = num(&truth, "minflt");
    let go = |view: &str| {
        let run = Command::new("go")
            .args(["tool", "pprof", view])
            .arg(&out)
            .output()
            .expect("go tool pprof");
        assert!(
            run.status.success(),
            "go tool pprof {view}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        String::from_utf8_lossy(&run.stdout).into_owned()
    };
    let top = go("-top");
    let flat: u64 = top
        .lines()
        .find(|l| l.split_whitespace().last() == Some("touch_pages"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no touch_pages in:\n{top}"));
    assert!(
        within(flat, minflt, 1.0),
        "pprof says {flat}, getrusage {minflt}:\n{top}"
    );
    let raw = go("-raw");
    let mapping = raw
        .lines()
        .find(|l| l.contains("/anon_writer "))
        .unwrap_or_else(|| panic!("no anon_writer mapping:\n{raw}"));
    let build_id = mapping.split_whitespace().nth(3).unwrap_or("");
    assert!(
        build_id.len() == 40 && build_id.chars().all(|c| c.is_ascii_hexdigit()),
        "{mapping}"
    );
    let tags = go("-tags");
    for want in [
        "comm:",
        "anon_writer",
        "kind:",
        "minor",
        "pid:",
        &num(&truth, "pid").to_string(),
    ] {
        assert!(tags.contains(want), "no {want} in:\n{tags}");
    }
}

/// Stacks counted before an exec are named from the program that ran them, not from the one
/// the process became (whose maps are all that is left to read at the end).
#[test]
fn stacks_before_an_exec_are_named_from_the_old_image() {
    if !root_or_skip() {
        return;
    }
    let out = scratch("stackcount-exec").join("folded.txt");
    let after = workload("anon_writer");
    let truth = pfault_on(
        &["stackcount", "-U", "--folded"],
        &out,
        "execer",
        &["3000", after.to_str().unwrap(), "2000"],
    );
    let folded = std::fs::read_to_string(&out).unwrap();
    for (leaf, comm, key) in [
        ("before_exec", "execer;", "before_exec"),
        ("touch_pages", "anon_writer;", "minflt"),
    ] {
        let (stack, count) =
            folded_count(&folded, leaf).unwrap_or_else(|| panic!("no {leaf} stack in:\n{folded}"));
        assert!(
            stack.starts_with(comm) && stack.contains(&format!(";main;{leaf}")),
            "{leaf}: {stack}"
        );
        let expected = num(&truth, key);
        assert!(
            within(count, expected, 1.0),
            "{leaf} counted {count}, getrusage says {expected}:\n{folded}"
        );
    }
}

/// A program pfault starts and that dies at once is named from its own file: the notice of
/// its mapping may come after it is gone, with a basename only (it came out as `segv+0x1070`
/// in about a third of runs).
#[test]
fn a_command_that_crashes_at_once_is_named() {
    if !root_or_skip() {
        return;
    }
    let out = scratch("stackcount-segv").join("folded.txt");
    for run in 0..10 {
        let done = run_with_timeout(
            pfault()
                .args(["stackcount", "-U", "--folded", "--kind", "error", "--output"])
                .arg(&out)
                .arg("--")
                .arg(workload("segv")),
            Duration::from_secs(30),
        );
        let folded = std::fs::read_to_string(&out).unwrap();
        assert!(
            folded.lines().any(|l| l.ends_with(";main 1")) && !folded.contains("segv+0x"),
            "run {run} ({}): {folded}",
            done.status
        );
    }
}
