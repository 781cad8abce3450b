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

/// The tracing tools that take `-- CMD` and `--output`.
const TOOLS: [&str; 4] = ["trace", "stackcount", "ffaults", "stat"];

/// An executable file holding `text`, in a fresh directory under /tmp.
fn script(what: &str, text: &str, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = unique_tmp(what);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(what);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A script without `#!` runs under a shell, but exec(2) refuses it: one line that says so
/// and how to run it, before anything is attached (the command never runs).
#[test]
fn a_script_without_a_shebang_is_one_clear_line() {
    let marker = unique_tmp("ran");
    let path = script("noshebang", &format!("touch {}\n", marker.display()), 0o755);
    for tool in TOOLS {
        let run = run_with_timeout(pfault().args([tool, "--"]).arg(&path), Duration::from_secs(30));
        let err = one_error_line(&run, &format!("{tool} -- noshebang"));
        assert!(
            err.contains("cannot run") && err.contains("#!") && err.contains(&*path.to_string_lossy()),
            "{tool}: {err}"
        );
        assert!(!marker.exists(), "{tool}: the script ran");
    }
}

/// What exec(2) alone finds out (here a `#!` interpreter that does not exist) is said in
/// words, with a failing status, not as a silent exit status 127.
#[test]
fn an_exec_that_fails_is_said_in_words() {
    if !root_or_skip() {
        return;
    }
    let path = script("badinterp", "#!/nonexistent/interpreter\ntrue\n", 0o755);
    for tool in TOOLS {
        let run = run_with_timeout(pfault().args([tool, "--"]).arg(&path), Duration::from_secs(30));
        let err = stderr_of(&run);
        assert!(!run.status.success(), "{tool}: {err}");
        let last = err.lines().last().unwrap_or("");
        assert!(
            last.starts_with("pfault: cannot run")
                && last.contains(&*path.to_string_lossy())
                && last.contains("interpreter"),
            "{tool}: {err}"
        );
    }
}

/// A file without execute permission is "not executable", not "no such executable".
#[test]
fn a_file_that_is_not_executable_is_called_that() {
    let path = script("noexec", "#!/bin/sh\ntrue\n", 0o644);
    for tool in TOOLS {
        let run = run_with_timeout(pfault().args([tool, "--"]).arg(&path), Duration::from_secs(30));
        let err = one_error_line(&run, &format!("{tool} -- noexec"));
        assert!(
            err.contains("not executable") && err.contains(&*path.to_string_lossy()),
            "{tool}: {err}"
        );
    }
}

/// A count map of no entries cannot be made: the flag's range, not "choose a smaller".
#[test]
fn map_entries_of_zero_is_refused_with_the_range() {
    for tool in ["stackcount", "ffaults"] {
        let run = run_with_timeout(
            pfault().args([tool, "-a", "--map-entries", "0"]),
            Duration::from_secs(30),
        );
        let err = one_error_line(&run, &format!("{tool} --map-entries 0"));
        assert!(
            err.contains("--map-entries") && err.contains("1..") && !err.contains("smaller"),
            "{tool}: {err}"
        );
    }
}

/// Where this kernel refuses fentry (as `pfault probes` reports), `--probe fentry` is one
/// line that says so and what to use instead, not the verifier's empty log.
#[test]
fn a_refused_fentry_is_one_clear_line() {
    if !root_or_skip() {
        return;
    }
    let probes = run_with_timeout(pfault().arg("probes"), Duration::from_secs(60));
    let report = String::from_utf8_lossy(&probes.stdout);
    let fentry = report.lines().find(|l| l.starts_with("mode fentry"));
    if fentry.is_none_or(|l| l.split_whitespace().nth(2) == Some("available")) {
        eprintln!("fentry is allowed here: nothing to refuse, skipped");
        return;
    }
    let run = run_with_timeout(
        pfault().args(["stat", "-a", "--probe", "fentry", "-d", "0"]),
        Duration::from_secs(30),
    );
    let err = one_error_line(&run, "stat --probe fentry");
    assert!(
        err.contains("fentry") && err.contains("--probe tracepoint") && !err.contains("Verifier"),
        "{err}"
    );
}

/// An output that cannot be written names its path.
#[test]
fn an_output_that_cannot_be_written_is_named() {
    if !root_or_skip() {
        return;
    }
    let run = run_with_timeout(
        pfault().args(["stat", "--output", "/dev/full", "--", "true"]),
        Duration::from_secs(30),
    );
    let err = stderr_of(&run);
    assert!(!run.status.success(), "{err}");
    assert!(err.lines().last().unwrap_or("").contains("/dev/full"), "{err}");
}

/// Mid-run, a write that fails ends pfault with a failing status and kills the command it
/// started, which would otherwise run on untraced: trace's output fills while the command
/// faults; the command would touch the marker 2 s later.
#[test]
fn an_output_that_fills_mid_run_kills_the_command() {
    if !root_or_skip() {
        return;
    }
    let marker = unique_tmp("survived");
    let run = run_with_timeout(
        pfault()
            .args(["trace", "--output", "/dev/full", "--", "sh", "-c"])
            .arg(format!(
                "'{}' x 20000; sleep 2; touch '{}'",
                workload("named").display(),
                marker.display()
            )),
        Duration::from_secs(30),
    );
    let err = stderr_of(&run);
    assert!(!run.status.success(), "{err}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(!marker.exists(), "the command ran on after pfault failed: {err}");
    assert!(
        err.lines().last().unwrap_or("").contains("writing /dev/full"),
        "{err}"
    );
}

/// `--listen 127.0.0.1:0` takes a free port: the serving line says which, and it answers.
#[test]
fn the_exporter_says_the_port_it_was_given() {
    if !root_or_skip() {
        return;
    }
    use std::io::BufRead;
    let mut child = pfault()
        .args(["exporter", "--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let serving = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("serving"))
        .unwrap_or_default();
    let port: u16 = serving
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let answer = (port != 0).then(|| http_get(port, "/metrics"));
    let _ = child.kill();
    let _ = child.wait();
    assert_ne!(port, 0, "{serving}");
    let (status, _) = answer.unwrap().unwrap();
    assert_eq!(status, 200, "{serving}");
}

/// The exporter runs until stopped: its help offers no command, and one is refused.
#[test]
fn the_exporter_offers_no_command() {
    let help = run_with_timeout(pfault().args(["exporter", "--help"]), Duration::from_secs(10));
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(!help.contains("<CMD>"), "{help}");
    let run = run_with_timeout(pfault().args(["exporter", "--", "true"]), Duration::from_secs(10));
    assert!(!run.status.success());
}

/// `stat` alone counts every process, as its help says and as the other tools do.
#[test]
fn stat_without_a_target_counts_every_process() {
    if !root_or_skip() {
        return;
    }
    let out = scratch("input-stat-all").join("stat.out");
    let help = run_with_timeout(pfault().args(["stat", "--help"]), Duration::from_secs(10));
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("the default where no PID"),
        "stat's help no longer says -a is the default"
    );
    let stat = Attached::start(pfault().args(["stat", "-d", "2", "--output"]).arg(&out));
    let ran = Command::new(workload("anon_writer"))
        .arg("2000")
        .output()
        .unwrap();
    assert!(ran.status.success());
    stat.wait(Duration::from_secs(30));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("anon_writer"), "stat missed anon_writer:\n{text}");
}

/// As a user without privileges, `probes` says tracefs is mounted but root's alone (it is
/// mounted here: the tests need it), not that it is missing.
#[test]
fn probes_as_a_user_tells_a_closed_tracefs_from_a_missing_one() {
    if !root_or_skip() {
        return;
    }
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/kernel/tracing"));
    assert!(mounted, "tracefs is not mounted at /sys/kernel/tracing");
    let bin = pfault().get_program().to_owned();
    let run = run_with_timeout(
        Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(bin)
            .arg("probes"),
        Duration::from_secs(60),
    );
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{}{out}", stderr_of(&run));
    let line = out
        .lines()
        .find(|l| l.starts_with("tracefs"))
        .unwrap_or_else(|| panic!("no tracefs line:\n{out}"));
    assert!(
        line.contains("mounted at") && !line.contains("not mounted"),
        "{line}"
    );
}

/// A kernel thread (PF_KTHREAD in /proc/PID/stat) has no user memory: `pages` says so.
#[test]
fn pages_of_a_kernel_thread_says_what_it_is() {
    if !root_or_skip() {
        return;
    }
    let kthread = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let flags = s.rsplit_once(')')?.1.split_whitespace().nth(6)?;
                    flags.parse::<u64>().ok()
                })
                .is_some_and(|f| f & 0x0020_0000 != 0)
        });
    let Some(pid) = kthread else {
        eprintln!("no kernel thread visible (a pid namespace?), skipped");
        return;
    };
    let run = run_with_timeout(
        pfault().args(["pages", "-p", &pid.to_string()]),
        Duration::from_secs(30),
    );
    let err = one_error_line(&run, &format!("pages -p {pid}"));
    assert!(err.contains("kernel thread"), "{err}");
}

/// `-o pprof` is gzip: to a terminal it is refused with a line that says where to put it.
#[test]
fn a_pprof_profile_is_not_written_to_a_terminal() {
    if !root_or_skip() {
        return;
    }
    let bin = pfault().get_program().to_string_lossy().into_owned();
    let run = run_with_timeout(
        Command::new("script").args(["-qec", &format!("'{bin}' stackcount -o pprof -d 0"), "/dev/null"]),
        Duration::from_secs(60),
    );
    let out = &run.stdout;
    let text = String::from_utf8_lossy(out);
    assert!(!run.status.success(), "{text}");
    assert!(
        !out.windows(2).any(|w| w == [0x1f, 0x8b]),
        "gzip reached the terminal"
    );
    assert!(text.contains("--output FILE"), "{text}");
}
