//! `pfault top` in a real terminal: tmux runs it, capture-pane reads the screen.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use pfault_tests::*;

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(["-L", "pfault-test"])
        .args(args)
        .output()
        .expect("tmux (apt-get install tmux)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn screen() -> String {
    tmux(&["capture-pane", "-p", "-t", "top"])
}

fn wait_for(what: &str, cond: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let s = screen();
        if cond(&s) {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "waiting for {what}; screen:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn top_draws_the_busiest_process_and_q_restores_the_terminal() {
    if !root_or_skip() {
        return;
    }
    tmux(&["kill-server"]);
    tmux(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "160",
        "-y",
        "30",
        "bash --norc --noprofile",
    ]);
    tmux(&["send-keys", "-t", "top", "PS1='READY> '; clear", "Enter"]);
    wait_for("the shell", |s| s.contains("READY>"));
    let bin = std::env::var("PFAULT_BIN").unwrap_or_else(|_| {
        root()
            .join("target/release/pfault")
            .to_string_lossy()
            .into_owned()
    });
    tmux(&["send-keys", "-t", "top", &format!("{bin} top -i 0.5"), "Enter"]);
    wait_for("the header", |s| {
        s.contains("FAULTS/s") && s.contains("TOP MAPPING")
    });
    // A workload faulting hard while top watches: it must show up with its rate.
    let mut w = Command::new(workload("anon_writer"))
        .args(["3000000", "16384"])
        .spawn()
        .unwrap();
    let s = wait_for("the workload's row", |s| {
        s.lines()
            .any(|l| l.contains("anon_writer") && l.contains("[anon]"))
    });
    let row = s.lines().find(|l| l.contains("anon_writer")).unwrap().to_string();
    let _ = w.kill();
    let _ = w.wait();
    let rate: f64 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(rate > 1000.0, "anon_writer faulting slower than 1000/s? {row}");
    assert_eq!(
        tmux(&["display", "-p", "-t", "top", "#{alternate_on}"]).trim(),
        "1",
        "top should use the alternate screen"
    );
    tmux(&["send-keys", "-t", "top", "q"]);
    let s = wait_for("the shell back", |s| {
        s.lines().last().is_some_and(|l| l.starts_with("READY>")) || s.trim_end().ends_with("READY>")
    });
    assert_eq!(
        tmux(&["display", "-p", "-t", "top", "#{alternate_on}"]).trim(),
        "0",
        "alternate screen left on:\n{s}"
    );
    assert!(!s.contains("FAULTS/s"), "top's screen still shown:\n{s}");
    // Raw mode is off again: a typed command runs.
    tmux(&["send-keys", "-t", "top", "echo back-$((40+2))", "Enter"]);
    wait_for("echo", |s| s.contains("back-42"));
    tmux(&["kill-server"]);
}
