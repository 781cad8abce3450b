//! How pfault fails: a bad argument, an unwritable file or a missing process is one clear line
//! on stderr before anything runs; `-a` works in every tracing tool; the traced command's exit
//! status becomes pfault's; loss advice names a flag the tool has.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use pfault_tests::*;

/// The tracing tools that take `-p`, `-a`, `--output` and `-- CMD`.
const TOOLS: [&str; 4] = ["trace", "stackcount", "ffaults", "stat"];

#[test]
fn a_ring_buffer_over_the_limit_is_refused_before_the_command_runs() {
    let file = unique_tmp("ringbuf");
    let run = run_with_timeout(
        pfault()
            .args(["trace", "--ringbuf-mb", "100000", "--", "touch"])
            .arg(&file),
        Duration::from_secs(30),
    );
    let err = one_error_line(&run, "trace --ringbuf-mb 100000");
    assert!(err.contains("--ringbuf-mb") && err.contains("2048"), "{err}");
    assert!(!file.exists(), "the command ran: {} exists", file.display());
}

#[test]
fn an_unwritable_svg_fails_at_once() {
    let start = Instant::now();
    let run = run_with_timeout(
        pfault().args(["stackcount", "--svg", "/nonexistent/x.svg", "--", "sleep", "3"]),
        Duration::from_secs(30),
    );
    let took = start.elapsed();
    let err = one_error_line(&run, "stackcount --svg /nonexistent/x.svg");
    assert!(
        err.contains("/nonexistent/x.svg") && err.contains("--svg"),
        "{err}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "failed only after {took:?}: {err}"
    );
}

#[test]
fn an_unwritable_output_fails_before_the_command_runs() {
    for tool in TOOLS {
        let file = unique_tmp(tool);
        let start = Instant::now();
        let run = run_with_timeout(
            pfault()
                .args([tool, "--output", "/nonexistent/dir/out", "--", "touch"])
                .arg(&file),
            Duration::from_secs(30),
        );
        let took = start.elapsed();
        let err = one_error_line(&run, &format!("{tool} --output /nonexistent/dir/out"));
        assert!(
            err.contains("/nonexistent/dir/out") && err.contains("--output"),
            "{tool}: {err}"
        );
        assert!(
            !file.exists(),
            "{tool}: the command ran: {} exists",
            file.display()
        );
        assert!(
            took < Duration::from_millis(1500),
            "{tool} failed only after {took:?}"
        );
    }
}

#[test]
fn a_pid_that_does_not_exist_is_one_clear_line() {
    for tool in TOOLS {
        let run = run_with_timeout(
            // A backtrace, if anything would print one, would show.
            pfault()
                .args([tool, "-p", "999999999"])
                .env("RUST_BACKTRACE", "1"),
            Duration::from_secs(30),
        );
        let err = one_error_line(&run, &format!("{tool} -p 999999999"));
        assert!(err.contains("no such process: 999999999"), "{tool}: {err}");
    }
}

#[test]
fn probes_knows_the_lockdown_mode() {
    let run = run_with_timeout(pfault().arg("probes"), Duration::from_secs(60));
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{}{out}", stderr_of(&run));
    let lockdown = out
        .lines()
        .find(|l| l.starts_with("lockdown"))
        .unwrap_or_else(|| panic!("no lockdown line:\n{out}"));
    assert!(!lockdown.contains("unknown"), "{lockdown}");
    let mode = lockdown.split_whitespace().nth(1).unwrap_or("");
    assert!(
        ["none", "integrity", "confidentiality"].contains(&mode),
        "{lockdown}"
    );
}

/// Every tracing tool takes `-a`: a process started while it runs is in its output.
#[test]
fn all_processes_is_taken_by_every_tracing_tool() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("failures-all");
    for tool in TOOLS {
        let out = dir.join(format!("{tool}.out"));
        let pfault_run = Attached::start(pfault().args([tool, "-a", "-d", "2", "--output"]).arg(&out));
        let status = Command::new(workload("anon_writer"))
            .arg("2000")
            .output()
            .unwrap();
        assert!(status.status.success());
        pfault_run.wait(Duration::from_secs(30));
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(
            text.contains("anon_writer"),
            "{tool} -a missed anon_writer:\n{text}"
        );
    }
}

#[test]
fn the_commands_exit_status_becomes_pfaults() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("failures-exit");
    for tool in TOOLS {
        for code in [7, 0] {
            let run = run_with_timeout(
                pfault()
                    .args([tool, "--output"])
                    .arg(dir.join(format!("{tool}-{code}.out")))
                    .args(["--", "sh", "-c", &format!("exit {code}")]),
                Duration::from_secs(60),
            );
            assert_eq!(
                run.status.code(),
                Some(code),
                "{tool} -- sh -c 'exit {code}': {}",
                stderr_of(&run)
            );
        }
    }
}

/// `top` draws on a terminal: `script` gives it one.
#[test]
fn top_passes_on_the_exit_status_too() {
    if !root_or_skip() {
        return;
    }
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("script (util-linux) not installed: no terminal to run top on, skipped");
        return;
    }
    let bin = pfault().get_program().to_string_lossy().into_owned();
    let run = run_with_timeout(
        Command::new("script").args([
            "-qec",
            &format!("'{bin}' top -- sh -c 'sleep 0.5; exit 7'"),
            "/dev/null",
        ]),
        Duration::from_secs(60),
    );
    assert_eq!(
        run.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
}

/// Without a terminal `top` cannot draw: one line that says so, before anything is loaded or
/// started.
#[test]
fn top_without_a_terminal_is_one_clear_line() {
    if !root_or_skip() {
        return;
    }
    let file = unique_tmp("top");
    let run = run_with_timeout(
        pfault()
            .args(["top", "-d", "1", "--", "touch"])
            .arg(&file)
            .stdin(std::process::Stdio::null()),
        Duration::from_secs(30),
    );
    let err = one_error_line(&run, "top without a terminal");
    assert!(err.contains("terminal"), "{err}");
    assert!(!file.exists(), "the command ran: {} exists", file.display());
}

/// The flags a loss line advises (`raise --flag`): each must be one `pfault TOOL --help` lists.
fn check_advice(tool: &str, err: &str) -> Vec<String> {
    let help = run_with_timeout(pfault().args([tool, "--help"]), Duration::from_secs(10));
    let help = String::from_utf8_lossy(&help.stdout);
    let flags: Vec<String> = err
        .split("raise ")
        .skip(1)
        .map(|s| {
            s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    for f in &flags {
        assert!(f.starts_with("--"), "{tool}: advice names no flag: {err}");
        assert!(
            help.contains(f.as_str()),
            "{tool} has no {f}, but its loss line says so: {err}"
        );
    }
    flags
}

/// Count maps of one entry fill at once: the line says so and names `--map-entries`.
#[test]
fn a_full_count_map_names_the_flag_that_sizes_it() {
    if !root_or_skip() {
        return;
    }
    for args in [&["stackcount", "-U"][..], &["ffaults"][..]] {
        let run = run_with_timeout(
            pfault()
                .args(args)
                .args(["--map-entries", "1", "--", "ls", "-l", "/"]),
            Duration::from_secs(60),
        );
        let err = stderr_of(&run);
        assert!(run.status.success(), "{args:?}: {err}");
        let line = err
            .lines()
            .find(|l| l.contains("count map was full"))
            .unwrap_or_else(|| panic!("{args:?} --map-entries 1: no loss line: {err}"));
        assert_eq!(check_advice(args[0], line), ["--map-entries"], "{line}");
        // The kernel side says it only when asked.
        assert!(
            !err.contains("pfault: kernel:"),
            "{args:?}: logged without --bpf-log: {err}"
        );
    }
}

/// `--bpf-log` prints the kernel side's own words on a loss, once per CPU.
#[test]
fn bpf_log_tells_when_a_count_map_fills() {
    if !root_or_skip() {
        return;
    }
    let run = run_with_timeout(
        pfault().args([
            "stackcount",
            "-U",
            "--bpf-log",
            "--map-entries",
            "1",
            "--",
            "ls",
            "-l",
            "/",
        ]),
        Duration::from_secs(60),
    );
    let err = stderr_of(&run);
    assert!(run.status.success(), "{err}");
    let logged: Vec<&str> = err
        .lines()
        .filter(|l| {
            l.starts_with("pfault: kernel: cpu ") && l.ends_with("a count map is full, counts dropped")
        })
        .collect();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(!logged.is_empty() && logged.len() <= cpus, "{err}");
}

/// A 1 MiB ring buffer that pfault does not read (stopped) while 50000 faults each send a
/// record fills: the end line must then say which flag makes it bigger.
#[test]
fn a_full_ring_buffer_names_the_flag_that_sizes_it() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("failures-ringbuf");
    let held = Held::start(Command::new(workload("anon_writer")).args(["50000", "0", "wait"]));
    let tracer = Attached::start(
        pfault()
            .args([
                "trace",
                "--ringbuf-mb",
                "1",
                "-p",
                &held.pid.to_string(),
                "--output",
            ])
            .arg(dir.join("trace.out")),
    );
    /// Continues the stopped pfault however the test goes on.
    struct Stopped(i32);
    impl Drop for Stopped {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the pfault this test started.
            unsafe { libc::kill(self.0, libc::SIGCONT) };
        }
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(tracer.pid() as i32, libc::SIGSTOP) }, 0);
    let stopped = Stopped(tracer.pid() as i32);
    held.go();
    drop(stopped);
    let err = tracer.wait(Duration::from_secs(60));
    let line = err
        .lines()
        .find(|l| l.contains(" events, "))
        .unwrap_or_else(|| panic!("no events line: {err}"));
    let lost: u64 = line
        .split(" events, ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no lost count in {line}"));
    assert!(lost > 0, "a stopped reader lost nothing? {line}");
    assert_eq!(check_advice("trace", line), ["--ringbuf-mb"], "{line}");
}

/// `pfault trace ... | head -1`: once the reader has gone, pfault writes no more and ends
/// quietly with the command, in either format.
#[test]
fn a_closed_pipe_ends_trace_quietly() {
    if !root_or_skip() {
        return;
    }
    for format in ["text", "json"] {
        let mut child = pfault()
            .args(["trace", "-o", format, "--"])
            .arg(workload("anon_writer"))
            .arg("200000")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut first,
        )
        .unwrap();
        // The reader (and with it the pipe) is gone here.
        assert!(!first.is_empty(), "{format}: no output");
        let run = wait_with_timeout(child, Duration::from_secs(60));
        let err = stderr_of(&run);
        // The command shares the closed pipe: writing to it, it dies of SIGPIPE (141) as it
        // would without pfault, and its status is pfault's.
        assert!(
            matches!(run.status.code(), Some(0 | 141)),
            "{format}: {:?}: {err}",
            run.status
        );
        assert!(
            err.lines().all(|l| l.contains("probe mode")
                || l.contains(" events, ")
                || l.starts_with("{\"summary\"")),
            "{format}: {err}"
        );
    }
}
