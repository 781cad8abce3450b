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
    let dir = scratch("stackcount-json");
    let out = dir.join("stacks.json");
    let minflt = num(
        &pfault_on(&["stackcount", "-o", "json"], &out, "anon_writer", &["3000"]),
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
