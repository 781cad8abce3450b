//! Frames in code a runtime compiled as it ran, named from the perf map it writes
//! (`/tmp/perf-PID.map`): node with `--perf-basic-prof`, CPython 3.12 with `-X perf`. Each
//! script's function touches fresh pages; pfault must name it on every one of those faults,
//! and on at least as many faults as `perf record` names it on the same script.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use pfault_tests::*;

/// A runtime and the script it runs.
struct Jit {
    /// The program and the flags that make it write a perf map.
    command: Vec<String>,
    script: PathBuf,
    /// The script's function, as pfault's and perf's frames name it.
    function: &'static str,
    /// How perf walks the stacks it is compared with: by frame pointer for node (V8 keeps
    /// them), by DWARF for CPython (built without them, where -g names nothing).
    perf_call_graph: &'static str,
}

impl Jit {
    fn node() -> Jit {
        let node = on_path("node").unwrap_or_else(|| {
            panic!("node not found on PATH: `cargo xtask test` installs it (apt-get install nodejs)")
        });
        Jit {
            command: vec![
                node.to_string_lossy().into_owned(),
                "--perf-basic-prof".into(),
                // Interpreted functions get code of their own, which the map names too.
                "--interpreted-frames-native-stack".into(),
                // Its log of code events, isolate-*-v8.log, would litter the working directory;
                // the perf map is written all the same.
                "--logfile=/dev/null".into(),
            ],
            script: root().join("tests/workloads/jit_touch.js"),
            function: "pfaultJsTouchPages",
            perf_call_graph: "fp",
        }
    }

    fn python() -> Jit {
        Jit {
            command: vec![
                python312().to_string_lossy().into_owned(),
                "-X".into(),
                "perf".into(),
            ],
            script: root().join("tests/workloads/jit_touch.py"),
            function: "pfault_py_touch_pages",
            perf_call_graph: "dwarf",
        }
    }

    /// The script's command line.
    fn args(&self) -> Vec<String> {
        let mut args = self.command.clone();
        args.push(self.script.to_string_lossy().into_owned());
        args
    }
}

fn on_path(cmd: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// CPython 3.12, the first with `-X perf`: pyenv's newest 3.12, else one on PATH that runs
/// (pyenv's shim is on PATH whether or not the version is selected).
fn python312() -> PathBuf {
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv")));
    let mut versions: Vec<PathBuf> = pyenv
        .and_then(|p| std::fs::read_dir(p.join("versions")).ok())
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let bin = e.path().join("bin/python3.12");
            (e.file_name().to_string_lossy().starts_with("3.12") && bin.is_file()).then_some(bin)
        })
        .collect();
    versions.sort();
    let runs = |p: &Path| {
        Command::new(p)
            .args(["-c", "pass"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    versions
        .pop()
        .or_else(|| on_path("python3.12").filter(|p| runs(p)))
        .unwrap_or_else(|| {
            panic!(
                "python3.12 not found (pyenv's versions/3.12*, or PATH): install it with \
                 `pyenv install 3.12` (Debian 12's python3 is 3.11, which has no -X perf)"
            )
        })
}

/// The perf map a process of the test's left in /tmp, deleted when dropped.
struct MapOf(u64);

impl Drop for MapOf {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/tmp/perf-{}.map", self.0));
    }
}

/// Faults of the one process whose stacks hold `function`, in `-P` folded stacks: how many
/// hold it, and all of that process's.
fn faults_of(folded: &str, function: &str) -> (u64, u64) {
    let lines = folded_lines(folded);
    let process = |stack: &str| stack.split(';').next().unwrap_or_default().to_string();
    let named_in: HashSet<String> = lines
        .iter()
        .filter(|(s, _)| s.contains(function))
        .map(|(s, _)| process(s))
        .collect();
    assert!(
        named_in.len() == 1,
        "{function} named in {named_in:?}, one process expected; the heaviest stacks:\n{}",
        heaviest(&lines)
    );
    let me = named_in.into_iter().next().unwrap();
    lines
        .iter()
        .filter(|(s, _)| process(s) == me)
        .fold((0, 0), |(named, all), (s, n)| {
            (named + if s.contains(function) { *n } else { 0 }, all + n)
        })
}

fn heaviest(lines: &[(String, u64)]) -> String {
    let mut lines = lines.to_vec();
    lines.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    lines
        .iter()
        .take(5)
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `perf record -e page-faults -c 1` on the script: of the script's process's faults, how
/// many stacks name `function`, and all.
fn perf_faults(jit: &Jit, dir: &Path) -> (u64, u64) {
    let perf = on_path("perf").unwrap_or_else(|| {
        panic!("perf not found on PATH: `cargo xtask test` installs it (apt-get install linux-perf)")
    });
    let data = dir.join("perf.data");
    let run = run_with_timeout(
        Command::new(&perf)
            .args(["record", "-q", "-e", "page-faults", "-c", "1", "--call-graph"])
            .arg(jit.perf_call_graph)
            .arg("-o")
            .arg(&data)
            .arg("--")
            .args(jit.args()),
        Duration::from_secs(120),
    );
    assert!(run.status.success(), "perf record: {}", stderr_of(&run));
    let pid = num(&kv(&String::from_utf8_lossy(&run.stdout)), "pid").to_string();
    let _map = MapOf(pid.parse().unwrap());
    // Tens of MB: to a file, not a pipe no one reads until perf exits.
    let samples = dir.join("perf.script");
    let script = Command::new(&perf)
        .args(["script", "-F", "comm,pid,ip,sym", "-i"])
        .arg(&data)
        .stdout(std::fs::File::create(&samples).unwrap())
        .stderr(Stdio::null())
        .status()
        .expect("perf script");
    assert!(script.success(), "perf script: {script}");
    let text = String::from_utf8_lossy(&std::fs::read(&samples).unwrap()).into_owned();
    // A sample is a `comm pid` line, then its frames, then a blank line.
    let samples = text
        .split("\n\n")
        .filter(|s| s.lines().next().and_then(|h| h.split_whitespace().last()) == Some(pid.as_str()));
    samples.fold((0, 0), |(named, all), s| {
        (named + s.contains(jit.function) as u64, all + 1)
    })
}

/// `pfault stackcount -a -U -P -f --output`, with room for the unwind tables of whatever
/// else the host runs (a build's compilers fill the default 8 MiB, and the runtime's table is
/// then never loaded: its stacks are cut before they reach its JIT code).
fn host_wide() -> Command {
    let mut c = pfault();
    c.args([
        "stackcount",
        "-a",
        "-U",
        "-P",
        "-f",
        "--unwind-mb",
        "64",
        "--output",
    ]);
    c
}

/// The faults of the script's touches that must be named: all but a few. Stacks that met a
/// table still loading, or a mapping not looked up while the mmap lock was busy (four builds
/// on two cores once cut 1,143 of 65,536 short that way), are walked by userspace from
/// copies; what may still cut one short is a copy the ring buffer had no room for.
fn most(touches: u64) -> u64 {
    touches - touches / 100
}

/// `pfault stackcount -U -P -f ARGS`: its folded stacks and what the script printed.
fn stackcount(args: &[&str], out: &Path, limit: Duration) -> String {
    let run = run_with_timeout(
        pfault()
            .args(["stackcount", "-U", "-P", "-f", "--output"])
            .arg(out)
            .args(args),
        limit,
    );
    assert!(run.status.success(), "pfault: {}", stderr_of(&run));
    String::from_utf8_lossy(&run.stdout).into_owned()
}

/// `pfault stackcount -- SCRIPT`: the function named on each of the script's touches, and on
/// as many faults as perf names it.
fn named_as_perf_names(jit: Jit, name: &str) {
    if !root_or_skip() {
        return;
    }
    let dir = scratch(name);
    let out = dir.join("folded.txt");
    let mut args = vec!["--".to_string()];
    args.extend(jit.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let said = kv(&stackcount(&args, &out, Duration::from_secs(120)));
    let _map = MapOf(num(&said, "pid"));
    let touches = num(&said, "touches");
    let (named, all) = faults_of(&std::fs::read_to_string(&out).unwrap(), jit.function);
    let (perf_named, perf_all) = perf_faults(&jit, &dir);
    let report = format!(
        "pfault names {} on {named} of {all} faults, perf on {perf_named} of {perf_all}; \
         the script touched {touches} pages",
        jit.function
    );
    eprintln!("{name}: {report}");
    assert!(named >= most(touches), "{report}");
    as_many_as_perf(named, perf_named, touches, &report);
}

/// pfault names the script's function on at least as many faults as perf, but for how much
/// perf's count varies. perf names more than it should: its map lookup takes the longest name
/// at an address, and V8 reuses the code memory of a function it dropped, so the frames of
/// console.log at the script's end are named pfaultJsTouchPages, whose optimized code was
/// there before (measured: 253 of perf's 65,870); pfault names them by the functions written
/// by the time each stack arrived. The faults of V8's heap growing inside the function vary
/// by about 150 from run to run. (A library's table may be built a few ms after it is mapped,
/// with a cold page cache: the stacks of the faults meanwhile are walked from copies, as
/// perf walks every sample's, and lose nothing.)
fn as_many_as_perf(named: u64, perf_named: u64, touches: u64, report: &str) {
    let slack = touches / 200;
    assert!(named + slack >= perf_named, "{report}");
}

#[test]
fn node_functions_are_named_from_its_perf_map() {
    named_as_perf_names(Jit::node(), "jit-node");
}

#[test]
fn python_functions_are_named_from_its_perf_map() {
    named_as_perf_names(Jit::python(), "jit-python");
}

/// Host-wide, started before the script: the function named on each of its touches. With
/// `contained`, the script runs as a container's would ([`contained`]): its map is
/// /tmp/perf-1.map on a tmpfs that goes with it when it exits, before pfault names its
/// stacks.
fn named_host_wide(jit: Jit, name: &str, contained: bool) {
    if !root_or_skip() {
        return;
    }
    let dir = scratch(name);
    let out = dir.join("folded.txt");
    let tracer = Attached::start(host_wide().arg(&out));
    // Host-wide, a process's tables are asked for by its first stacks, which are walked from
    // copies until they are in: no warm-up.
    let args = jit.args();
    let run = if contained {
        // The script is not under /tmp, which the tmpfs hides.
        run_with_timeout(&mut self::contained(&args.join(" ")), Duration::from_secs(120))
    } else {
        run_with_timeout(Command::new(&args[0]).args(&args[1..]), Duration::from_secs(120))
    };
    assert!(run.status.success(), "{args:?}: {}", stderr_of(&run));
    let said = kv(&String::from_utf8_lossy(&run.stdout));
    let _map = (!contained).then(|| MapOf(num(&said, "pid")));
    if contained {
        assert_eq!(
            num(&said, "pid"),
            1,
            "the script knows itself as pid 1 in its namespace"
        );
    }
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGINT) };
    let stderr = tracer.wait(Duration::from_secs(60));
    let touches = num(&said, "touches");
    let (named, all) = faults_of(&std::fs::read_to_string(&out).unwrap(), jit.function);
    let report = format!(
        "{} named on {named} of {all} faults, {touches} touches\n{stderr}",
        jit.function
    );
    assert!(named >= most(touches), "{report}");
    if !contained {
        let (perf_named, perf_all) = perf_faults(&jit, &dir);
        as_many_as_perf(
            named,
            perf_named,
            touches,
            &format!("{report}perf names it on {perf_named} of {perf_all}"),
        );
    }
}

#[test]
fn node_in_a_container_is_named_host_wide_after_it_exits() {
    named_host_wide(Jit::node(), "jit-node-contained", true);
}

#[test]
fn python_is_named_host_wide() {
    named_host_wide(Jit::python(), "jit-python-host-wide", false);
}

/// `unshare` running `program args` as a container would: in its own pid namespace (where
/// it is pid 1) with a tmpfs of its own on /tmp, gone with it when it exits.
fn contained(program: &str) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--mount", "--pid", "--fork", "--mount-proc", "sh", "-c"])
        .arg(format!("mount -t tmpfs pfault-jit /tmp && exec {program}"));
    c
}

/// A JIT that writes its perf map as it exits, in a container, traced host-wide: its map is
/// /tmp/perf-1.map on a tmpfs gone by the time pfault names the stacks, read through the
/// container's /tmp held open since the process was first seen.
#[test]
fn a_map_written_at_exit_in_a_container_names_its_code() {
    if !root_or_skip() {
        return;
    }
    let out = scratch("jit-map-at-exit").join("folded.txt");
    let tracer = Attached::start(host_wide().arg(&out));
    let program = format!("{} 5000 perfmap-at-exit", workload("jit_writer").display());
    let run = run_with_timeout(&mut contained(&program), Duration::from_secs(60));
    assert!(run.status.success(), "{program}: {}", stderr_of(&run));
    let said = kv(&String::from_utf8_lossy(&run.stdout));
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGINT) };
    let stderr = tracer.wait(Duration::from_secs(60));
    let folded = std::fs::read_to_string(&out).unwrap();
    let (named, _) = faults_of(&folded, "pfault_jit_store");
    let minflt = num(&said, "minflt");
    assert!(
        within(named, minflt, 1.0),
        "pfault_jit_store named on {named} faults, getrusage says {minflt}\n{stderr}"
    );
}

/// Every output names JIT code from its map: stackcount's text (from a map written at exit),
/// JSON, SVG and pprof, and trace's stacks (from one written before the code runs: trace
/// names each fault as it comes).
#[test]
fn every_format_names_jit_code() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("jit-formats");
    let jit_writer = workload("jit_writer");
    let run_with = |args: &[&str], file: &str, map: &str| {
        let out = dir.join(file);
        let (said, _) = pfault_on_program(args, &out, &jit_writer, &["5000", map]);
        let map = MapOf(num(&said, "pid"));
        (out, num(&said, "minflt"), map)
    };
    let run = |args: &[&str], file: &str| run_with(args, file, "perfmap");
    let (out, _, map) = run_with(&["stackcount", "-U"], "stacks.txt", "perfmap-at-exit");
    let text = std::fs::read_to_string(&out).unwrap();
    let label = format!("pfault_jit_store [perf-{}.map]", map.0);
    assert!(text.contains(&label), "no {label} in:\n{text}");

    let flame = dir.join("flame.svg");
    run(
        &["stackcount", "-U", "--svg", flame.to_str().unwrap()],
        "folded.txt",
    );
    let svg = std::fs::read_to_string(&flame).unwrap();
    assert!(svg.contains("<title>pfault_jit_store "), "{svg}");

    let (out, minflt, map) = run(&["stackcount", "-U", "-o", "json"], "stacks.json");
    let module = format!("/tmp/perf-{}.map", map.0);
    let named: u64 = json_lines(&out)
        .iter()
        .filter(|r| r["ustack"][0]["symbol"] == "pfault_jit_store" && r["ustack"][0]["module"] == *module)
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        within(named, minflt, 1.0),
        "JSON: {named} named, getrusage {minflt}"
    );

    let (out, minflt, _) = run(&["stackcount", "-U", "-o", "pprof"], "faults.pb.gz");
    let flat = pprof_flat(&out, "pfault_jit_store");
    assert!(within(flat, minflt, 1.0), "pprof: {flat}, getrusage {minflt}");

    let (out, minflt, map) = run(&["trace", "-U", "-o", "json"], "trace.json");
    let named = json_lines(&out)
        .iter()
        .filter(|e| e["pid"].as_u64() == Some(map.0) && e["ustack"][0]["symbol"] == "pfault_jit_store")
        .count() as u64;
    assert!(
        within(named, minflt, 1.0),
        "trace: {named} named, getrusage {minflt}"
    );
}
