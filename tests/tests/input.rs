//! What pfault takes in from people: numbers on the command line are checked before
//! anything runs.

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
