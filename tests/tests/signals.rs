//! Signals, pipes and files at the edges of a run: a SIGINT or SIGTERM at any moment of
//! start-up ends pfault without releasing the command; the command gets the signal state
//! and the nice value pfault was given (its ring reader runs raised); a start that fails
//! leaves the output files as they were; a closed output pipe keeps the command's exit
//! status.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::{CommandExt, ExitStatusExt},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use pfault_tests::*;

/// A path in /tmp no run has used.
fn unique_tmp(what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    PathBuf::from(format!("/tmp/pfault-s-{what}-{}-{nanos}", std::process::id()))
}

/// pfault's exit as a shell reports it: 128 + the signal that killed it.
fn shell_status(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap())
}

/// Sends `sig` to a pfault `delay` into its start-up and checks it ends promptly; if it ended
/// by the signal (start-up had not finished), the command, which would create `marker`, never
/// ran. `ignored`: pfault inherits SIGINT ignored, as a shell's `cmd &` starts it. Returns
/// whether start-up was interrupted.
fn signal_during_start_up(args: &[&str], sig: i32, delay_ms: u64, ignored: bool) -> bool {
    let marker = unique_tmp("ran");
    let mut cmd = pfault();
    cmd.args(args);
    let with_command = args.contains(&"--");
    if with_command {
        // Long enough that a pfault still waiting for it is caught by the time limit below.
        cmd.arg("sh")
            .arg("-c")
            .arg(format!("touch {}; sleep 6", marker.display()));
    }
    // Set either way: the test's own SIGINT may be ignored (a CI runner that started it in
    // the background), and pfault inherits what its parent has.
    let disposition = if ignored { libc::SIG_IGN } else { libc::SIG_DFL };
    // SAFETY: signal(2) in the child before exec, as a shell does for `cmd &`.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGINT, disposition);
            Ok(())
        });
    }
    let what = format!("{args:?} signal {sig} at {delay_ms} ms (SIGINT ignored: {ignored})");
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(delay_ms));
    // SAFETY: kill(2) on the pfault this test started.
    unsafe { libc::kill(child.id() as i32, sig) };
    let sent = Instant::now();
    let limit = Duration::from_secs(3);
    while child.try_wait().unwrap().is_none() && sent.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = sent.elapsed();
    if took >= limit {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(took < limit, "{what}: still running {took:?} later: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    let status = shell_status(out.status);
    let interrupted = status == 128 + sig;
    assert!(
        interrupted || status == 0,
        "{what}: exit {status}, not {} or 0: {err}",
        128 + sig
    );
    if interrupted {
        assert!(
            !marker.exists(),
            "{what}: start-up was interrupted but the command ran"
        );
        assert!(
            !err.contains("pfault: ") || err.lines().all(|l| l.contains("probe mode")),
            "{what}: an interrupted start-up is quiet: {err}"
        );
    } else {
        assert!(
            err.contains("probe mode"),
            "{what}: ended with 0 but never finished start-up: {err}"
        );
    }
    let _ = std::fs::remove_file(&marker);
    interrupted
}

#[test]
fn a_signal_at_any_moment_of_start_up_ends_pfault_and_the_command_never_runs() {
    if !root_or_skip() {
        return;
    }
    let runs: [&[&str]; 3] = [&["stat", "--"], &["trace", "--"], &["trace", "-a"]];
    for args in runs {
        for (sig, ignored) in [
            (libc::SIGINT, true),
            (libc::SIGINT, false),
            (libc::SIGTERM, false),
        ] {
            let mut interrupted = 0;
            // A signal pfault inherited ignored is dropped by the kernel until main starts
            // (about a millisecond after exec): from 5 ms on it must count.
            let delays: &[u64] = if ignored {
                &[5, 10, 20, 50, 100]
            } else {
                &[0, 5, 20, 50, 100]
            };
            for &delay in delays {
                interrupted += signal_during_start_up(args, sig, delay, ignored) as u32;
            }
            // Start-up takes some 100 ms: had no signal hit it, this test would have tested
            // nothing.
            assert!(interrupted > 0, "{args:?}: no signal came during start-up");
        }
    }
}

/// What `/proc/self/status` says of a command's signals (SigIgn, SigBlk) when `wrap` runs it.
fn signal_state(wrap: &[&str]) -> String {
    let mut cmd = if wrap.is_empty() {
        Command::new("grep")
    } else {
        let mut c = pfault();
        c.args(wrap).arg("grep");
        c
    };
    cmd.args(["-E", "^Sig(Ign|Blk)", "/proc/self/status"]);
    // SAFETY: signal(2) and sigprocmask(2) in the child before exec: the state pfault, and
    // the command without pfault, are given.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGUSR2, libc::SIG_IGN);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
    assert!(out.status.success(), "{wrap:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_command_gets_the_signal_dispositions_and_mask_pfault_was_given() {
    if !root_or_skip() {
        return;
    }
    let alone = signal_state(&[]);
    let mask = |name: &str| {
        let line = alone.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split('\t').nth(1).unwrap(), 16).unwrap()
    };
    // SIGUSR2 ignored (bit 12 of SigIgn: 0x800) and SIGUSR1 blocked (0x200), as given.
    assert!(
        mask("SigIgn") & 0x800 != 0 && mask("SigBlk") & 0x200 != 0,
        "{alone}"
    );
    for tool in ["stat", "trace", "stackcount", "ffaults"] {
        let under = signal_state(&[tool, "--output", "/dev/null", "--"]);
        assert_eq!(under, alone, "{tool}: the command's signal state changed");
    }
}

/// The nice value of a thread, from its `stat` file.
fn nice_of(stat: &str) -> i32 {
    // Fields after the comm's ')': state is the 3rd field, nice the 19th.
    let after = stat.rsplit_once(')').unwrap().1;
    after.split_whitespace().nth(16).unwrap().parse().unwrap()
}

#[test]
fn the_ring_reader_runs_raised_and_the_command_at_the_nice_pfault_was_given() {
    if !root_or_skip() {
        return;
    }
    for tool in ["stat", "trace", "stackcount", "ffaults"] {
        let mut cmd = pfault();
        cmd.args([
            tool,
            "--output",
            "/dev/null",
            "--",
            "sh",
            "-c",
            "nice; exec sleep 5",
        ]);
        // SAFETY: setpriority(2) in the child before exec: pfault is given nice 3.
        unsafe {
            cmd.pre_exec(|| {
                libc::setpriority(libc::PRIO_PROCESS, 0, 3);
                Ok(())
            });
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let mut said = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut said)
            .unwrap();
        // The command runs once the reader is raised: pfault's main thread reads the ring.
        let reader = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let _ = child.wait();
        assert_eq!(said.trim(), "3", "{tool}: the command's nice value");
        assert_eq!(nice_of(&reader), -5, "{tool}: pfault's ring reader: {reader}");
    }
}

#[test]
fn a_pipeline_in_the_command_ends_on_sigpipe_as_without_pfault() {
    if !root_or_skip() {
        return;
    }
    let script = "yes | head -1 >/dev/null; echo ${PIPESTATUS[0]}";
    let alone = run_with_timeout(Command::new("bash").args(["-c", script]), Duration::from_secs(30));
    assert_eq!(String::from_utf8_lossy(&alone.stdout).trim(), "141");
    let under = run_with_timeout(
        pfault().args(["stat", "--output", "/dev/null", "--", "bash", "-c", script]),
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&under.stderr);
    assert_eq!(
        String::from_utf8_lossy(&under.stdout).trim(),
        "141",
        "yes did not die of SIGPIPE under pfault: {err}"
    );
    assert!(!err.contains("Broken pipe"), "{err}");
}

/// A file holding what a failed start must leave alone.
fn precious(path: &Path) {
    std::fs::write(path, "precious\n").unwrap();
}

#[test]
fn a_start_that_fails_leaves_the_output_files_as_they_were() {
    if !root_or_skip() {
        return;
    }
    let failing: [&[&str]; 2] = [&["-p", "999999"], &["--cgroup", "/nope"]];
    let runs: [(&str, &str); 5] = [
        ("trace", "--output"),
        ("stackcount", "--output"),
        ("stackcount", "--svg"),
        ("ffaults", "--output"),
        ("stat", "--output"),
    ];
    for (tool, flag) in runs {
        for why in failing {
            let kept = unique_tmp("kept");
            precious(&kept);
            let fresh = unique_tmp("fresh");
            for file in [&kept, &fresh] {
                let run = run_with_timeout(
                    pfault().arg(tool).args(why).arg(flag).arg(file),
                    Duration::from_secs(30),
                );
                assert!(!run.status.success(), "{tool} {why:?} succeeded");
            }
            let what = format!("{tool} {flag} FILE {why:?}");
            assert_eq!(
                std::fs::read_to_string(&kept).unwrap(),
                "precious\n",
                "{what} emptied the file"
            );
            assert!(!fresh.exists(), "{what} left a file it made");
            let _ = std::fs::remove_file(&kept);
        }
    }
}

#[test]
fn a_run_that_starts_replaces_what_the_output_file_held() {
    if !root_or_skip() {
        return;
    }
    for (tool, flag) in [("stat", "--output"), ("stackcount", "--svg")] {
        let file = unique_tmp("replaced");
        // Longer than anything the run writes: a file not emptied keeps a tail of it.
        std::fs::write(&file, "precious\n".repeat(100_000)).unwrap();
        let run = run_with_timeout(
            pfault().args([tool, flag]).arg(&file).args(["--", "true"]),
            Duration::from_secs(30),
        );
        assert!(run.status.success(), "{tool}: {run:?}");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("precious"), "{tool} {flag}: old contents left");
        assert!(!text.is_empty(), "{tool} {flag}: nothing written");
        let _ = std::fs::remove_file(&file);
    }
}

#[test]
fn a_closed_output_pipe_keeps_the_commands_exit_status_and_the_summary() {
    if !root_or_skip() {
        return;
    }
    let runs: [&[&str]; 2] = [&["trace", "-o", "json"], &["stat", "-o", "json", "-i", "0.1"]];
    for args in runs {
        let mut child = pfault()
            .args(args)
            .args(["--", "sh", "-c", "sleep 1; exit 3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // As `| head -1`: one line read, then the pipe closed.
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.starts_with('{'), "{args:?}: {first}");
        let out = wait_with_timeout(child, Duration::from_secs(30));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert_eq!(summary(&err)["exit_status"], 3, "{args:?}: {err}");
    }
}
