//! What every subcommand shares: choosing the target (a PID, a command name, or a command
//! pfault starts itself), starting the engine, and the loop that ends on a duration, a signal
//! or the target's exit, with an optional interval tick and ring-buffer reader.

use std::{
    ffi::CString,
    fs::File,
    io::Write,
    os::fd::{FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use crate::probes::{Engine, Plan, TaskFilter};

const RING_POLL: Duration = Duration::from_millis(20);

/// Which processes to look at. Shared by every tracing subcommand.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TargetArgs {
    /// Only this process (all its threads); stop when it exits
    #[arg(short, long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<u32>,
    /// Only processes with this command name (as in /proc/PID/comm)
    #[arg(short, long, value_name = "COMM")]
    pub comm: Option<String>,
    /// Start this command and trace it and its children from their first instruction
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(clap::Args, Clone, Debug, Default)]
pub struct DurationArgs {
    /// Stop after SECONDS (0: attach, then stop at once)
    #[arg(short, long, value_name = "SECONDS")]
    pub duration: Option<f64>,
}

#[derive(clap::Args, Clone, Debug, Default)]
pub struct IntervalArgs {
    /// Print (and reset) every SECONDS
    #[arg(short, long, value_name = "SECONDS")]
    pub interval: Option<f64>,
}

/// Why the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Duration,
    Signal,
    /// The handler asked to stop.
    Quit,
    /// The traced process or command exited; the command's exit code when pfault started it.
    TargetExited(Option<i32>),
}

impl End {
    /// pfault's exit status: the command's, when pfault started one and it exited.
    pub fn exit_code(self) -> Option<i32> {
        match self {
            End::TargetExited(code) => code,
            _ => None,
        }
    }
}

/// A command forked by pfault, held before `exec` until the probes are attached.
struct Paused {
    pid: u32,
    release: File,
}

pub struct Session {
    pub engine: Engine,
    paused: Option<Paused>,
    child: Option<u32>,
    watch: Option<AsyncFd<OwnedFd>>,
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Checks that `pid` names a live process, and not one of its threads.
pub fn check_pid(pid: u32) -> Result<()> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|_| anyhow::anyhow!("no such process: {pid} (check the PID with `ps -p {pid}`)"))?;
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .map(|s| s.trim().to_string());
    if let Some(tgid) = tgid.filter(|t| t != &pid.to_string()) {
        bail!("{pid} is a thread of process {tgid}: pass -p {tgid} (or -t {pid} where the tool has it)");
    }
    Ok(())
}

/// Finds `prog` as execvp would, so a typo is one clear error and not a child exiting 127.
fn resolve_program(prog: &str) -> Result<PathBuf> {
    let is_exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
            .unwrap_or(false)
    };
    if prog.contains('/') {
        if is_exec(Path::new(prog)) {
            return Ok(prog.into());
        }
    } else if let Some(found) = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(prog))
        .find(|p| is_exec(p))
    {
        return Ok(found);
    }
    bail!("cannot run {prog}: no such executable (check the command after `--`)");
}

/// Forks `argv` and holds the child until `Paused::release` is written, so the probes can be
/// attached and its pid put in the filter before its first instruction. (std's `Command`
/// waits for the exec, so it cannot hold a child back.)
fn spawn_paused(argv: &[String]) -> Result<Paused> {
    let prog = CString::new(resolve_program(&argv[0])?.into_os_string().into_encoded_bytes())?;
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let mut argp: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argp.push(std::ptr::null());
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        // Child: only async-signal-safe calls until exec.
        unsafe {
            libc::close(fds[1]);
            let mut b = 0u8;
            while libc::read(fds[0], (&mut b as *mut u8).cast(), 1) < 0 {}
            libc::execv(prog.as_ptr(), argp.as_ptr());
            libc::_exit(127);
        }
    }
    unsafe { libc::close(fds[0]) };
    Ok(Paused {
        pid: pid as u32,
        release: unsafe { File::from_raw_fd(fds[1]) },
    })
}

impl Session {
    /// Resolves the target, starts the engine for `plan`, and reports the probe mode.
    pub fn start(target: &TargetArgs, tid: Option<u32>, plan: &Plan) -> Result<Session> {
        if let Some(pid) = target.pid {
            check_pid(pid)?;
        }
        if let Some(tid) = tid {
            if !Path::new(&format!("/proc/{tid}")).exists() {
                bail!("no such thread: {tid}");
            }
        }
        crate::probes::check_privileges()?;
        let paused = if target.command.is_empty() {
            None
        } else {
            Some(spawn_paused(&target.command)?)
        };
        let filter = TaskFilter {
            tgid: target.pid.unwrap_or(0),
            tid: tid.unwrap_or(0),
            comm: target.comm.clone(),
            follow: paused.is_some(),
        };
        let started = Engine::start(plan, &filter);
        let mut engine = match started {
            Ok(e) => e,
            Err(e) => {
                if let Some(p) = &paused {
                    unsafe { libc::kill(p.pid as i32, libc::SIGKILL) };
                }
                return Err(e);
            }
        };
        if let Some(p) = &paused {
            engine.trace_tgid(p.pid)?;
        }
        let watched = paused.as_ref().map(|p| p.pid).or(target.pid);
        let watch = match watched {
            Some(pid) => Some(readable_fd(
                pidfd_open(pid).map_err(|_| anyhow::anyhow!("no such process: {pid}"))?,
            )?),
            None => None,
        };
        eprintln!("pfault: {}", engine.describe());
        Ok(Session {
            engine,
            child: paused.as_ref().map(|p| p.pid),
            paused,
            watch,
        })
    }

    /// Lets a command started by pfault run.
    fn release(&mut self) -> Result<()> {
        if let Some(mut p) = self.paused.take() {
            p.release.write_all(b"g").context("releasing the command")?;
        }
        Ok(())
    }

    /// Runs until the duration passes, a signal arrives or the target exits. Records from
    /// `ring`, when given, go to `handler.record` in batches as they arrive; `handler.tick`
    /// runs every `interval` and once at the end.
    pub async fn run(
        &mut self,
        duration: &DurationArgs,
        interval: Option<f64>,
        mut ring: Option<&mut AsyncFd<RingBuf<MapData>>>,
        handler: &mut dyn Handler,
    ) -> Result<End> {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let deadline = duration
            .duration
            .map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d.max(0.0)));
        let period = interval.map(|i| Duration::from_secs_f64(i.max(0.001)));
        let mut ticker = tokio::time::interval(period.unwrap_or(Duration::from_secs(3600)));
        ticker.tick().await;
        self.release()?;
        let end = loop {
            if deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
                break End::Duration;
            }
            tokio::select! {
                _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => break End::Duration,
                _ = sigint.recv() => break End::Signal,
                _ = sigterm.recv() => break End::Signal,
                r = async { self.watch.as_ref().unwrap().readable().await }, if self.watch.is_some() => {
                    drop(r?);
                    break End::TargetExited(self.reap());
                }
                _ = ticker.tick(), if period.is_some() => {
                    handler.tick(&mut self.engine, false)?;
                    if handler.quit() {
                        break End::Quit;
                    }
                }
                r = async {
                    // The programs wake us only for a batch; poll for the trickle in between.
                    let fd = ring.as_mut().unwrap();
                    match tokio::time::timeout(RING_POLL, fd.readable_mut()).await {
                        Ok(guard) => {
                            let mut guard = guard?;
                            drain(guard.get_inner_mut(), handler)?;
                            guard.clear_ready();
                        }
                        Err(_) => drain(fd.get_mut(), handler)?,
                    }
                    handler.idle(&mut self.engine);
                    anyhow::Ok(())
                }, if ring.is_some() => r?,
            }
        };
        if let Some(fd) = ring.as_mut() {
            drain(fd.get_mut(), handler)?;
        }
        handler.tick(&mut self.engine, true)?;
        Ok(end)
    }

    /// [`Self::run`] for the tools that count in the kernel: then says on stderr what the
    /// kernel could not record (`ring_what` names what the ring buffer carried) and returns
    /// pfault's exit status.
    pub async fn run_counting(
        &mut self,
        duration: &DurationArgs,
        interval: Option<f64>,
        ring: Option<&mut AsyncFd<RingBuf<MapData>>>,
        handler: &mut dyn Handler,
        ring_what: &str,
    ) -> Result<Option<i32>> {
        let end = self.run(duration, interval, ring, handler).await?;
        crate::agg::report_losses(&self.engine, ring_what)?;
        Ok(end.exit_code())
    }

    /// The exit code of a command pfault started (128 + signal when killed), once it exited.
    fn reap(&mut self) -> Option<i32> {
        let pid = self.child.take()?;
        let mut status = 0;
        if unsafe { libc::waitpid(pid as i32, &mut status, 0) } < 0 {
            return None;
        }
        Some(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        })
    }
}

impl Drop for Session {
    /// A command still held back (pfault failed before the loop) must not linger.
    fn drop(&mut self) {
        if let Some(p) = &self.paused {
            unsafe { libc::kill(p.pid as i32, libc::SIGKILL) };
            self.reap();
        }
    }
}

/// What a subcommand does with the run loop's records and ticks.
pub trait Handler {
    /// One ring-buffer record.
    fn record(&mut self, _data: &[u8]) -> Result<()> {
        Ok(())
    }

    /// After each batch of records, or every poll period when none came.
    fn idle(&mut self, _engine: &mut Engine) {}

    /// Checked after every tick: the user asked to stop (`q` in `top`).
    fn quit(&self) -> bool {
        false
    }

    /// Every interval, and once at the end (`last`).
    fn tick(&mut self, _engine: &mut Engine, _last: bool) -> Result<()> {
        Ok(())
    }
}

fn drain(ring: &mut RingBuf<MapData>, handler: &mut dyn Handler) -> Result<()> {
    while let Some(item) = ring.next() {
        handler.record(&item)?;
    }
    Ok(())
}

/// Takes the `EVENTS` ring buffer out of the engine for [`Session::run`].
pub fn event_ring(engine: &mut Engine) -> Result<AsyncFd<RingBuf<MapData>>> {
    let map = engine.ebpf.take_map("EVENTS").context("no EVENTS map")?;
    readable_fd(RingBuf::try_from(map)?)
}

fn readable_fd<T: std::os::fd::AsRawFd>(inner: T) -> Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its descriptor, which stays open for as long as the AsyncFd holds it.
    unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering a descriptor with tokio: {e}"))
}
