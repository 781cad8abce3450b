//! Every filter flag on every tool that takes it. A target and a decoy run at the same time,
//! started once pfault has attached: the target must be counted as its own getrusage says
//! (or not at all where the filter leaves none of its faults), the decoy not at all (or, under
//! -a, as its own getrusage says). The decoy's name is the target's with a letter added, so a
//! `-c` that compared prefixes would count it.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use pfault_tests::*;
use Expect::*;
use Target::*;
use Tool::*;

/// Pages each workload faults per phase: enough that 1% covers a process's start and exit.
const PAGES: u64 = 5000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tool {
    Trace,
    Stackcount,
    Ffaults,
    Stat,
    Top,
    Exporter,
}

const FILE_TOOLS: &[Tool] = &[Trace, Stackcount, Ffaults, Stat];
const EVERY_TOOL: &[Tool] = &[Trace, Stackcount, Ffaults, Stat, Top, Exporter];

#[derive(Clone, Copy, Debug)]
enum Target {
    /// kernel_then_user: PAGES minor faults in kernel mode, then PAGES in user mode.
    KernelThenUser,
    /// file_reader on a file of PAGES pages dropped from the page cache: major faults.
    FileReader,
}

/// The target's count a filter must give, from what the target printed of its getrusage.
#[derive(Clone, Copy, Debug)]
enum Expect {
    All,
    Minor,
    Major,
    UserMode,
    KernelMode,
    Nothing,
}

impl Expect {
    fn of(self, truth: &Truth) -> u64 {
        match self {
            All => num(truth, "minflt") + num(truth, "majflt"),
            Minor => num(truth, "minflt"),
            Major => num(truth, "majflt"),
            UserMode => num(truth, "user_minflt"),
            KernelMode => num(truth, "kernel_minflt"),
            Nothing => 0,
        }
    }
}

type Truth = std::collections::HashMap<String, String>;

/// One row of the matrix: a filter, run on each of `tools`.
struct Filter {
    /// `{pid}`, `{comm}` and `{cgroup}` stand for the target's; `--` makes the target
    /// pfault's command.
    args: &'static [&'static str],
    target: Target,
    expect: Expect,
    /// Whether the decoy is counted too (as its getrusage says); else it must be absent.
    decoy_counted: bool,
    tools: &'static [Tool],
}

const fn filter(
    args: &'static [&'static str],
    target: Target,
    expect: Expect,
    decoy_counted: bool,
    tools: &'static [Tool],
) -> Filter {
    Filter {
        args,
        target,
        expect,
        decoy_counted,
        tools,
    }
}

const FILTERS: &[Filter] = &[
    filter(&["-p", "{pid}"], KernelThenUser, All, false, EVERY_TOOL),
    filter(&["-c", "{comm}"], KernelThenUser, All, false, EVERY_TOOL),
    filter(&["--cgroup", "{cgroup}"], KernelThenUser, All, false, EVERY_TOOL),
    // Not top: every process of a shared host does not fit its screen.
    filter(
        &["-a"],
        KernelThenUser,
        All,
        true,
        &[Trace, Stackcount, Ffaults, Stat, Exporter],
    ),
    // Top's command would share its terminal; the exporter takes none.
    filter(&["--"], KernelThenUser, All, false, FILE_TOOLS),
    filter(&["-t", "{pid}"], KernelThenUser, All, false, &[Trace]),
    filter(
        &["-p", "{pid}", "--kind", "minor"],
        KernelThenUser,
        Minor,
        false,
        EVERY_TOOL,
    ),
    filter(
        &["-p", "{pid}", "--kind", "major"],
        FileReader,
        Major,
        false,
        EVERY_TOOL,
    ),
    filter(
        &["-p", "{pid}", "--kind", "major"],
        KernelThenUser,
        Nothing,
        false,
        EVERY_TOOL,
    ),
    filter(
        &["-p", "{pid}", "--kind", "error"],
        KernelThenUser,
        Nothing,
        false,
        EVERY_TOOL,
    ),
    filter(
        &["-p", "{pid}", "--minor"],
        KernelThenUser,
        Minor,
        false,
        &[Stackcount],
    ),
    filter(
        &["-p", "{pid}", "--major"],
        FileReader,
        Major,
        false,
        &[Stackcount],
    ),
    filter(
        &["-p", "{pid}", "--user-faults"],
        KernelThenUser,
        UserMode,
        false,
        EVERY_TOOL,
    ),
    filter(
        &["-p", "{pid}", "--kernel-faults"],
        KernelThenUser,
        KernelMode,
        false,
        EVERY_TOOL,
    ),
    filter(
        &["-p", "{pid}", "--min-latency", "1000000"],
        KernelThenUser,
        Nothing,
        false,
        EVERY_TOOL,
    ),
    filter(
        &["-p", "{pid}", "--probe", "tracepoint"],
        KernelThenUser,
        All,
        false,
        EVERY_TOOL,
    ),
];

/// Faults a tool reported for one process (`pid` None where the tool names processes by
/// their name alone).
struct Counted {
    pid: Option<u64>,
    comm: String,
    count: u64,
}

/// What `rows` say of the process `pid` named `comm`; None when they never name it.
fn count_of(rows: &[Counted], pid: u64, comm: &str) -> Option<u64> {
    rows.iter()
        .filter(|r| r.comm == comm && r.pid.is_none_or(|p| p == pid))
        .map(|r| r.count)
        .reduce(|a, b| a + b)
}

/// The programs and data every case shares.
struct Setup {
    dir: PathBuf,
    target: PathBuf,
    decoy: PathBuf,
    data: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = scratch("filters");
        // Comms are cut at 15 bytes: both names stay below that.
        let name = format!("pff{}", std::process::id() % 100_000);
        let target = dir.join(&name);
        let decoy = dir.join(format!("{name}x"));
        for bin in [&target, &decoy] {
            std::fs::copy(workload("kernel_then_user"), bin).unwrap();
        }
        let data = dir.join("data.bin");
        std::fs::write(&data, vec![7u8; (PAGES * 4096) as usize]).unwrap();
        std::fs::File::open(&data).unwrap().sync_all().unwrap();
        Setup {
            dir,
            target,
            decoy,
            data,
        }
    }

    /// Where `tool` writes its counts (emptied first).
    fn output(&self, tool: Tool) -> PathBuf {
        let out = self.dir.join(format!("{tool:?}.out"));
        let _ = std::fs::remove_file(&out);
        out
    }

    /// The target's command line and the name it runs under.
    fn target(&self, target: Target) -> (Vec<String>, String) {
        let (argv, comm) = match target {
            KernelThenUser => (
                vec![path_str(&self.target), PAGES.to_string()],
                file_name(&self.target),
            ),
            FileReader => (
                vec![path_str(&workload("file_reader")), path_str(&self.data)],
                "file_reader".to_string(),
            ),
        };
        let held = ["wait", "linger"].map(String::from);
        (argv.into_iter().chain(held).collect(), comm)
    }
}

/// `pfault TOOL ARGS`, writing what it counted to `out`.
fn to_file(tool: Tool, out: &Path, args: &[String]) -> Command {
    let base: &[&str] = match tool {
        Trace => &["trace", "-o", "json"],
        Stackcount => &["stackcount", "-P", "-f"],
        Ffaults => &["ffaults", "-o", "json"],
        Stat => &["stat", "-o", "json"],
        Top | Exporter => unreachable!("{tool:?} writes no file"),
    };
    let mut cmd = pfault();
    cmd.args(base).arg("--output").arg(out).args(args);
    cmd
}

/// Kills a pfault this test started if the test fails before it ended, so that none is left
/// running on the host.
struct KillOnPanic(Option<u32>);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if let (Some(pid), true) = (self.0, std::thread::panicking()) {
            // SAFETY: kill on our own child's pid, not yet waited for.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

/// A tool running while the workloads do.
enum Running {
    /// Writes its counts to its --output file when it ends.
    ToFile(Attached, PathBuf),
    /// Started with the target as its command: the target's [`Held`] is pfault itself.
    WithCommand(PathBuf),
    Top(Tmux),
    Exporter(Attached, u16),
}

impl Running {
    fn start(tool: Tool, args: &[String], setup: &Setup) -> Running {
        match tool {
            Top => Running::Top(Tmux::top(args)),
            Exporter => {
                let port = free_port();
                let listen = format!("127.0.0.1:{port}");
                let mut cmd = pfault();
                cmd.args(["exporter", "--listen", &listen, "--collect-every", "0.5"])
                    .args(args);
                Running::Exporter(Attached::start(&mut cmd), port)
            }
            _ => {
                let out = setup.output(tool);
                Running::ToFile(Attached::start(&mut to_file(tool, &out, args)), out)
            }
        }
    }

    /// pfault's process, where this test started it.
    fn pid(&self) -> Option<u32> {
        match self {
            Running::ToFile(a, _) | Running::Exporter(a, _) => Some(a.pid()),
            Running::WithCommand(_) | Running::Top(_) => None,
        }
    }

    /// What a live view shows of the target once it has counted `want` of its faults (or, for
    /// want 0, after a while), read a refresh later so that the decoy had its chance to show.
    fn live_rows(&self, pid: u64, comm: &str, want: u64) -> Option<Vec<Counted>> {
        let read: Box<dyn Fn() -> Vec<Counted>> = match self {
            Running::Top(tmux) => Box::new(|| top_rows(&tmux.screen())),
            Running::Exporter(_, port) => Box::new(|| exporter_rows(*port)),
            _ => return None,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !within(count_of(&read(), pid, comm).unwrap_or(0), want, 1.0) {
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_millis(1000));
        Some(read())
    }

    /// Ends the tool (it ends by itself when its -p process is gone) and returns its counts,
    /// if it wrote them to a file.
    fn end(self, ends_itself: bool) -> Option<Vec<Counted>> {
        let stop = |a: Attached| {
            if !ends_itself {
                // SAFETY: kill on our own child's pid.
                unsafe { libc::kill(a.pid() as i32, libc::SIGINT) };
            }
            a.wait(Duration::from_secs(30));
        };
        let out = match self {
            Running::ToFile(a, out) => {
                stop(a);
                out
            }
            Running::WithCommand(out) => out,
            Running::Top(tmux) => {
                tmux.quit(ends_itself);
                return None;
            }
            Running::Exporter(a, _) => {
                stop(a);
                return None;
            }
        };
        let text = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        Some(if out.ends_with("Stackcount.out") {
            folded_rows(&text)
        } else {
            json_rows(&out)
        })
    }
}

/// Trace's events count one each; ffaults' rows their total; stat's rows their kinds.
fn json_rows(out: &Path) -> Vec<Counted> {
    json_lines(out)
        .into_iter()
        .filter(|v| v["pid"].is_u64())
        .map(|v| {
            let kinds = ["total", "minor", "major", "errors"].map(|k| v[k].as_u64());
            let count = match kinds {
                [Some(total), ..] => total,
                [None, Some(minor), Some(major), Some(errors)] => minor + major + errors,
                _ => 1,
            };
            Counted {
                pid: v["pid"].as_u64(),
                comm: v["comm"].as_str().unwrap().to_string(),
                count,
            }
        })
        .collect()
}

/// `comm_[pid];stack COUNT` lines (stackcount -P -f).
fn folded_rows(text: &str) -> Vec<Counted> {
    folded_lines(text)
        .into_iter()
        .map(|(stack, count)| {
            let head = stack.split(';').next().unwrap();
            let (comm, pid) = head
                .rsplit_once("_[")
                .unwrap_or_else(|| panic!("no pid in {stack}"));
            Counted {
                pid: Some(pid.trim_end_matches(']').parse().unwrap()),
                comm: comm.to_string(),
                count,
            }
        })
        .collect()
}

/// top's rows: PID COMM FAULTS/s MAJOR/s MINOR MAJOR ERRORS ...
fn top_rows(screen: &str) -> Vec<Counted> {
    screen
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let pid = f.first()?.parse().ok()?;
            let counts: Option<Vec<u64>> = f.get(4..7)?.iter().map(|n| n.parse().ok()).collect();
            Some(Counted {
                pid: Some(pid),
                comm: f[1].to_string(),
                count: counts?.iter().sum(),
            })
        })
        .collect()
}

/// pfault_page_faults_total{comm="...",...} N, from a scrape of /metrics.
fn exporter_rows(port: u16) -> Vec<Counted> {
    let (status, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    String::from_utf8(body)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let labels = l.strip_prefix("pfault_page_faults_total{comm=\"")?;
            let (comm, _) = labels.split_once('"')?;
            let (_, n) = l.rsplit_once(' ')?;
            Some(Counted {
                pid: None,
                comm: comm.to_string(),
                count: n.parse::<f64>().ok()? as u64,
            })
        })
        .collect()
}

/// `pfault top` in a tmux server of this test's own, so that other tests' are left alone.
struct Tmux(String);

impl Tmux {
    fn top(args: &[String]) -> Tmux {
        let t = Tmux(format!("pfault-filters-{}", std::process::id()));
        t.run(&["kill-server"]);
        let bin = pfault().get_program().to_str().unwrap().to_string();
        let line = format!("{bin} top -i 0.5 {}", args.join(" "));
        t.run(&["new-session", "-d", "-s", "top", "-x", "200", "-y", "50", &line]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !t.screen().contains("FAULTS/s") {
            assert!(
                Instant::now() < deadline,
                "top never drew its header:\n{}",
                t.screen()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .expect("tmux (apt-get install tmux)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    /// Presses q unless top is to end by itself; either way top must be gone within 10 s.
    fn quit(self, ends_itself: bool) {
        if !ends_itself {
            self.run(&["send-keys", "-t", "top", "q"]);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.run(&["list-sessions"]).contains("top:") {
            assert!(Instant::now() < deadline, "top did not end:\n{}", self.screen());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// Runs one filter on one tool; panics saying what was wrong.
fn check(tool: Tool, f: &Filter, setup: &Setup) {
    let (target_argv, target_comm) = setup.target(f.target);
    let decoy_comm = file_name(&setup.decoy);
    let mut decoy = Held::start(Command::new(&setup.decoy).args([&PAGES.to_string(), "wait", "linger"]));
    let with_command = f.args.contains(&"--");
    let cgroup = f.args.contains(&"{cgroup}").then(|| TestCgroup::new("filters"));
    let held_target = |cmd: &mut Command| Held::start(cmd.stderr(Stdio::piped()));
    let mut target =
        (!with_command).then(|| held_target(Command::new(&target_argv[0]).args(&target_argv[1..])));
    if let (Some(cg), Some(t)) = (&cgroup, &target) {
        cg.enter(t.pid);
    }
    let pid = target.as_ref().map_or(0, |t| t.pid);
    let args: Vec<String> = f
        .args
        .iter()
        .flat_map(|a| match *a {
            "{pid}" => vec![pid.to_string()],
            "{comm}" => vec![target_comm.clone()],
            "{cgroup}" => vec![path_str(&cgroup.as_ref().unwrap().dir)],
            "--" => std::iter::once("--".to_string())
                .chain(target_argv.clone())
                .collect(),
            a => vec![a.to_string()],
        })
        .collect();
    let running = if with_command {
        let out = setup.output(tool);
        target = Some(held_target(&mut to_file(tool, &out, &args)));
        Running::WithCommand(out)
    } else {
        Running::start(tool, &args, setup)
    };
    let mut guard = KillOnPanic(running.pid());
    let mut target = target.unwrap();
    let (pid, decoy_pid) = (target.pid as u64, decoy.pid as u64);
    target.release();
    decoy.release();
    let truth = target.lingering();
    let decoy_truth = decoy.lingering();
    if let FileReader = f.target {
        assert!(
            num(&truth, "majflt") >= PAGES * 99 / 100,
            "the file reader saw only {truth:?} major faults: page cache not dropped?"
        );
    }
    let want = f.expect.of(&truth);
    let live = running.live_rows(pid, &target_comm, want);
    target.finish();
    decoy.finish();
    let ends_itself = f.args.contains(&"-p") || with_command;
    let rows = running.end(ends_itself).or(live).unwrap();
    guard.0 = None;
    let got = count_of(&rows, pid, &target_comm).unwrap_or(0);
    assert!(
        within(got, want, 1.0),
        "target {target_comm} ({pid}) counted {got}, wanted {want} ({:?} of {truth:?})",
        f.expect
    );
    let decoy_got = count_of(&rows, decoy_pid, &decoy_comm);
    if f.decoy_counted {
        let decoy_want = All.of(&decoy_truth);
        assert!(
            decoy_got.is_some_and(|n| within(n, decoy_want, 1.0)),
            "decoy {decoy_comm} counted {decoy_got:?}, wanted {decoy_want}"
        );
    } else {
        assert_eq!(decoy_got, None, "decoy {decoy_comm} counted");
    }
}

/// Runs every filter `tool` takes, each to its end, and fails saying which did not filter.
fn check_tool(tool: Tool) {
    if !root_or_skip() {
        return;
    }
    let setup = Setup::new();
    let failures: Vec<String> = FILTERS
        .iter()
        .filter(|f| f.tools.contains(&tool))
        .filter_map(|f| {
            let failed = catch_unwind(AssertUnwindSafe(|| check(tool, f, &setup))).err()?;
            let why = failed
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| failed.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Some(format!("{tool:?} {}: {why}", f.args.join(" ")))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} filters failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn trace_filters() {
    check_tool(Trace);
}

#[test]
fn stackcount_filters() {
    check_tool(Stackcount);
}

#[test]
fn ffaults_filters() {
    check_tool(Ffaults);
}

#[test]
fn stat_filters() {
    check_tool(Stat);
}

#[test]
fn top_filters() {
    check_tool(Top);
}

#[test]
fn exporter_filters() {
    check_tool(Exporter);
}
