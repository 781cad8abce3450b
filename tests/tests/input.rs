//! What pfault takes in from people and from other processes: numbers on the command line
//! are checked before anything runs, and names any process can choose (a process's own
//! comm) never reach a terminal or a line-based reader as control characters.

use std::{process::Command, time::Duration};

use pfault_tests::*;

/// Every flag that takes a span of time refuses what is not a finite number in its range
/// with one line naming it: no panic (`inf`, `1e30`), no NaN taken as 0, no interval that
/// prints thousands of times a second or a collection loop that spins.
#[test]
fn every_time_flag_refuses_what_is_not_a_sane_number() {
    let cases: &[(&[&str], &str)] = &[
        (&["trace", "-d", "inf"], "--duration"),
        (&["trace", "-d", "NaN"], "--duration"),
        (&["stat", "-a", "-d", "1e30"], "--duration"),
        (&["stat", "-a", "--duration=-1"], "--duration"),
        (&["stat", "-a", "-i", "0", "-d", "1"], "--interval"),
        (&["stat", "-a", "-i", "NaN"], "--interval"),
        (&["stackcount", "-a", "-i", "inf"], "--interval"),
        (&["ffaults", "-a", "-i", "0.000001", "-d", "1"], "--interval"),
        (&["top", "-d", "inf"], "--duration"),
        (&["top", "-i", "NaN"], "--interval"),
        (
            &["trace", "-a", "--min-latency", "NaN", "-d", "0"],
            "--min-latency",
        ),
        (&["stat", "-a", "--min-latency=-3", "-d", "0"], "--min-latency"),
        (
            &["exporter", "--listen", "127.0.0.1:0", "--collect-every", "NaN"],
            "--collect-every",
        ),
        (
            &["exporter", "--listen", "127.0.0.1:0", "--collect-every", "inf"],
            "--collect-every",
        ),
        (
            &["exporter", "--listen", "127.0.0.1:0", "--collect-every", "1e30"],
            "--collect-every",
        ),
        (
            &[
                "exporter",
                "--listen",
                "127.0.0.1:0",
                "--collect-every",
                "0.000001",
            ],
            "--collect-every",
        ),
    ];
    for (args, flag) in cases {
        let what = args.join(" ");
        // A run that took a bad value would not end by itself in time (or would spin).
        let run = run_with_timeout(
            pfault().args(*args).env("RUST_BACKTRACE", "1"),
            Duration::from_secs(10),
        );
        let err = one_error_line(&run, &what);
        assert!(
            err.contains(flag) && err.contains(" from ") && err.contains(" to "),
            "{what}: the line must name {flag} and its range: {err}"
        );
    }
}

/// `-d 0` still means: attach, then stop at once; the smallest interval is taken.
#[test]
fn the_bounds_themselves_are_taken() {
    if !root_or_skip() {
        return;
    }
    let run = run_with_timeout(pfault().args(["stat", "-a", "-d", "0"]), Duration::from_secs(30));
    assert!(run.status.success(), "stat -a -d 0: {}", stderr_of(&run));
    let run = run_with_timeout(
        pfault().args(["stat", "-a", "-i", "0.01", "-d", "0.5"]),
        Duration::from_secs(30),
    );
    assert!(run.status.success(), "stat -a -i 0.01: {}", stderr_of(&run));
    let rounds = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter(|l| l.starts_with('['))
        .count();
    assert!(
        (10..=60).contains(&rounds),
        "stat -i 0.01 -d 0.5 printed {rounds} rounds"
    );
}

/// A name `named` gives itself: a newline and a colour escape, 11 bytes (a comm holds 15).
const HOSTILE: &str = "ev\nil\x1b[31mX";
/// How every text output must write it.
const ESCAPED: &str = "ev\\nil\\x1b[31mX";
/// How folded stacks write it: whitespace inside a frame is `_` there, as in bcc's.
const FOLDED: &str = "ev_il\\x1b[31mX";

/// What a text output made of a process named [`HOSTILE`]: the name escaped as `escaped`,
/// no row split by its newline, no escape sequence of its own.
fn check_escaped(what: &str, out: &[u8], escaped: &str) {
    let text = String::from_utf8_lossy(out);
    assert!(
        text.contains(escaped),
        "{what}: the name is not there escaped:\n{text}"
    );
    assert!(
        !text.contains("\x1b[31m"),
        "{what}: the name's escape sequence was written raw:\n{text:?}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("il")),
        "{what}: the name's newline split a line:\n{text}"
    );
}

#[test]
fn a_hostile_process_name_is_escaped_in_every_text_output() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("input-names");
    let named = workload("named");
    for args in [
        &["trace"][..],
        &["trace", "-U"],
        &["stat"],
        &["stat", "--hist"],
        &["stat", "-t"],
        &["stat", "-L"],
        &["ffaults"],
        &["stackcount", "-U"],
        &["stackcount", "-U", "-P"],
        &["stackcount", "-U", "-f"],
    ] {
        let out = dir.join(format!("{}.out", args.join("")));
        pfault_on_program(args, &out, &named, &[HOSTILE, "50"]);
        let escaped = if args.contains(&"-f") { FOLDED } else { ESCAPED };
        check_escaped(&args.join(" "), &std::fs::read(&out).unwrap(), escaped);
    }
}

/// `top` draws the name escaped: `script` gives it a terminal of 160 columns, and what it
/// drew is read back byte for byte.
#[test]
fn top_draws_a_hostile_process_name_escaped() {
    if !root_or_skip() {
        return;
    }
    let bin = pfault().get_program().to_string_lossy().into_owned();
    let named = workload("named");
    // The name goes through the environment: no quoting of a newline and an ESC for sh.
    let run = run_with_timeout(
        Command::new("script")
            .args([
                "-qec",
                &format!(
                    "stty cols 160 rows 30; '{bin}' top -i 0.1 -- '{}' \"$NAME\" 50 2000",
                    named.display()
                ),
                "/dev/null",
            ])
            .env("NAME", HOSTILE),
        Duration::from_secs(60),
    );
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stdout));
    check_escaped("top", &run.stdout, ESCAPED);
}
