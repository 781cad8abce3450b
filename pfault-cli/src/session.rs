//! What every tracing subcommand shares: choosing the target (every process, a PID, a command
//! name, or a command pfault starts itself), starting the engine, the loop that ends on a
//! duration, a signal or the target's exit (with an optional interval tick and ring-buffer
//! reader), and the summary it ends with.

use std::{
    os::fd::{FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::Result;
use aya::maps::{MapData, RingBuf};
use serde::Serialize;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use crate::{
    args::{DurationArgs, TargetArgs},
    cgroup,
    engine::{Engine, Losses, Plan, TaskFilter},
    held::Held,
    output::Format,
    procfs,
    records::{self, Record},
    signals::{self, Interrupted},
    symbolize::Symbols,
};

const RING_POLL: Duration = Duration::from_millis(20);

/// Why the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum End {
    Duration,
    Signal,
    /// The handler asked to stop.
    Quit,
    /// The traced process or command exited; the command's exit code when pfault started it.
    TargetExited(Option<i32>),
    /// Whoever read the output stopped reading (`| head`), and pfault started no command.
    OutputClosed,
}

impl End {
    /// pfault's exit status: the command's, when pfault started one and it exited.
    pub(crate) fn exit_code(&self) -> Option<i32> {
        match self {
            End::TargetExited(code) => *code,
            _ => None,
        }
    }
}

pub(crate) struct Session {
    pub(crate) engine: Engine,
    command: Option<Held>,
    watch: Option<AsyncFd<OwnedFd>>,
    started: Instant,
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; the result is a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The ring's reader is this thread: on a busy host it shares a CPU with the very processes
/// whose faults fill the ring, and a storm of stack copies (8 KiB each) outruns it at an equal
/// share. Raised a little (nice -5, whatever pfault was given), as the loop's last step
/// before reading: a command pfault started, and the table builders, were forked before, at
/// the nice value pfault was given.
fn raise_reader_priority() {
    // SAFETY: setpriority on this thread's own id. Without CAP_SYS_NICE it fails: no harm.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as u32, READER_NICE) };
}

/// The ring reader's nice value.
const READER_NICE: i32 = -5;

/// A pidfd that becomes readable when `pid` exits.
fn watch_exit(pid: u32) -> Result<AsyncFd<OwnedFd>> {
    let fd = pidfd_open(pid).map_err(|e| match e.raw_os_error() {
        Some(libc::ESRCH) => anyhow::anyhow!("no such process: {pid} (it exited)"),
        Some(libc::ENOSYS) => {
            anyhow::anyhow!("cannot watch process {pid}: this kernel has no pidfd_open (Linux 5.3+)")
        }
        _ => anyhow::anyhow!("cannot watch process {pid}: pidfd_open: {e}"),
    })?;
    readable_fd(fd)
}

impl Session {
    /// Resolves the target, starts the engine for `plan`, and reports the probe mode. A
    /// SIGINT or SIGTERM meanwhile ends it with [`Interrupted`], the command never released.
    pub(crate) fn start(target: &TargetArgs, tid: Option<u32>, plan: &Plan) -> Result<Session> {
        // A signal can fail a step on its way (the verifier gives up with EAGAIN when one is
        // pending): then the signal, not the step, is why pfault stops.
        let session = Self::start_steps(target, tid, plan).map_err(|e| match signals::received() {
            Some(sig) => Interrupted(sig).into(),
            None => e,
        })?;
        signals::check()?;
        eprintln!("pfault: {}", session.engine.describe());
        Ok(session)
    }

    fn start_steps(target: &TargetArgs, tid: Option<u32>, plan: &Plan) -> Result<Session> {
        if let Some(pid) = target.pid {
            procfs::check_pid(pid)?;
        }
        if let Some(tid) = tid {
            procfs::check_tid(tid)?;
        }
        procfs::check_privileges()?;
        let cgroup = target.cgroup.as_deref().map(cgroup::resolve).transpose()?;
        signals::check()?;
        // Held until everything below succeeded; dropped (killed) on any error.
        let command = if target.command.is_empty() {
            None
        } else {
            Some(Held::spawn(&target.command)?)
        };
        let filter = TaskFilter {
            tgid: target.pid.unwrap_or(0),
            tid: tid.unwrap_or(0),
            comm: target.comm.clone(),
            cgroup,
            follow: command.is_some(),
            program: command.as_ref().map(|c| c.program.clone()),
        };
        let mut engine = Engine::start(plan, &filter)?;
        if let Some(c) = &command {
            engine.trace_tgid(c.pid)?;
        }
        let watch = command
            .as_ref()
            .map(|c| c.pid)
            .or(target.pid)
            .map(watch_exit)
            .transpose()?;
        Ok(Session {
            engine,
            command,
            watch,
            started: Instant::now(),
        })
    }

    /// Symbols that know the target from the start: the maps of the process given with -p
    /// (`pid`), and the program pfault started, which may exit before its maps are read.
    pub(crate) fn symbols(&self, pid: Option<u32>) -> Symbols {
        let mut syms = Symbols::default();
        if let Some(pid) = pid {
            syms.note_process(pid);
        }
        if let Some(c) = &self.command {
            syms.maps.know_file(&c.program);
        }
        syms
    }

    /// Takes the ring buffer of events and process notices out of the engine, to read it in
    /// [`Self::run`].
    pub(crate) fn events(&mut self) -> Result<AsyncFd<RingBuf<MapData>>> {
        readable_fd(self.engine.take_events()?)
    }

    /// Resolves when the traced process (-p) or command exits; never where there is none.
    pub(crate) async fn target_exited(&self) -> Result<()> {
        exited(self.watch.as_ref()).await
    }

    /// Runs until the duration passes, a signal arrives or the target exits. Records from
    /// `ring`, when given, go to `handler.record` in batches as they arrive; `handler.tick`
    /// runs every `interval` and once at the end. On an error (output that cannot be
    /// written), the command pfault started is killed: it would run on untraced.
    pub(crate) async fn run(
        &mut self,
        duration: &DurationArgs,
        interval: Option<Duration>,
        ring: Option<&mut AsyncFd<RingBuf<MapData>>>,
        handler: &mut dyn Handler,
    ) -> Result<End> {
        let r = self.run_loop(duration, interval, ring, handler).await;
        if let (Err(_), Some(c)) = (&r, &self.command) {
            c.kill();
        }
        r
    }

    async fn run_loop(
        &mut self,
        duration: &DurationArgs,
        interval: Option<Duration>,
        mut ring: Option<&mut AsyncFd<RingBuf<MapData>>>,
        handler: &mut dyn Handler,
    ) -> Result<End> {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        // From here tokio sees every signal; one before is in the note.
        signals::check()?;
        raise_reader_priority();
        let deadline = duration.duration.map(|d| tokio::time::Instant::now() + d);
        let mut ticker = tokio::time::interval(interval.unwrap_or(Duration::from_secs(3600)));
        ticker.tick().await;
        if let Some(c) = &mut self.command {
            c.release()?;
        }
        // Once the output is closed (`| head`) nothing more is written; a command pfault
        // started is still waited for, as its exit status is pfault's. Without one, the run
        // ends there.
        let mut closed = false;
        let mut discard = Discard;
        let end = loop {
            let handler: &mut dyn Handler = if closed { &mut discard } else { &mut *handler };
            if deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
                break End::Duration;
            }
            let step: Result<Option<End>> = tokio::select! {
                _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => Ok(Some(End::Duration)),
                _ = sigint.recv() => Ok(Some(End::Signal)),
                _ = sigterm.recv() => Ok(Some(End::Signal)),
                r = exited(self.watch.as_ref()) => {
                    r?;
                    Ok(Some(End::TargetExited(self.command.as_ref().and_then(Held::reap))))
                }
                _ = ticker.tick(), if interval.is_some() => {
                    handler.tick(&mut self.engine, false).map(|()| {
                        self.engine.flush_log();
                        handler.quit().then_some(End::Quit)
                    })
                }
                r = async {
                    // The programs wake us only for a batch; poll for the trickle in between.
                    let fd = ring.as_mut().unwrap();
                    match tokio::time::timeout(RING_POLL, fd.readable_mut()).await {
                        Ok(guard) => {
                            let mut guard = guard?;
                            drain(&self.engine, guard.get_inner_mut(), handler)?;
                            guard.clear_ready();
                        }
                        Err(_) => drain(&self.engine, fd.get_mut(), handler)?,
                    }
                    handler.idle(&mut self.engine);
                    self.engine.flush_log();
                    anyhow::Ok(None)
                }, if ring.is_some() => r,
            };
            match step {
                Ok(Some(end)) => break end,
                Ok(None) => {}
                Err(e) if crate::is_broken_pipe(&e) => {
                    closed = true;
                    if self.command.is_none() {
                        break End::OutputClosed;
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let handler: &mut dyn Handler = if closed { &mut discard } else { handler };
        let last = ring
            .as_mut()
            .map_or(Ok(()), |fd| drain(&self.engine, fd.get_mut(), handler))
            .and_then(|()| handler.tick(&mut self.engine, true));
        match last {
            Err(e) if !crate::is_broken_pipe(&e) => return Err(e),
            _ => self.engine.flush_log(),
        }
        Ok(end)
    }

    /// Says on stderr how the run went and returns pfault's exit status. With `-o json` that
    /// is one JSON object (the last line of stderr); in text, the events count when `events`
    /// is given (trace), and what the kernel could not record, if anything. `ring_what` names
    /// what the ring buffer carried.
    pub(crate) fn finish(
        &self,
        end: End,
        format: Format,
        events: Option<u64>,
        ring_what: &str,
    ) -> Result<Option<i32>> {
        let lost = self.engine.losses()?;
        let unwind = self.engine.unwind_report()?;
        let plan = &self.engine.plan;
        match format {
            Format::Json => {
                let summary = Summary {
                    probe_mode: self.engine.mode.name(),
                    seconds: self.started.elapsed().as_secs_f64(),
                    events,
                    lost,
                    exit_status: end.exit_code(),
                    unwind,
                };
                eprintln!("{}", serde_json::json!({ "summary": summary }));
            }
            Format::Text => {
                match (events, lost.line(plan, ring_what)) {
                    (Some(n), _) => {
                        eprintln!("pfault: {n} events, {}{}", lost.ring(plan, ""), lost.others(plan))
                    }
                    (None, Some(line)) => eprintln!("pfault: {line}"),
                    (None, None) => {}
                }
                if let Some(u) = unwind {
                    eprintln!("pfault: {}", u.line());
                }
            }
        }
        Ok(end.exit_code())
    }
}

/// Resolves when the process `watch` (a pidfd) refers to exits; never without one.
async fn exited(watch: Option<&AsyncFd<OwnedFd>>) -> Result<()> {
    match watch {
        Some(watch) => {
            drop(watch.readable().await?);
            Ok(())
        }
        None => std::future::pending().await,
    }
}

/// The machine-readable end of a run (`-o json`).
#[derive(Serialize)]
struct Summary {
    probe_mode: &'static str,
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<u64>,
    lost: Losses,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_status: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unwind: Option<crate::engine::UnwindReport>,
}

/// What a subcommand does with the run loop's records and ticks.
pub(crate) trait Handler {
    /// One ring-buffer record.
    fn record(&mut self, _record: Record) -> Result<()> {
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

/// Takes everything and writes nothing: the handler once the output is closed, so the ring
/// buffer is still read (what the kernel loses stays a real loss) but nothing is written.
struct Discard;

impl Handler for Discard {}

fn drain(engine: &Engine, ring: &mut RingBuf<MapData>, handler: &mut dyn Handler) -> Result<()> {
    drain_records(engine, ring, |r| handler.record(r))
}

/// Decodes every record waiting in `ring` and hands each to `take`, but those the engine
/// serves itself.
pub(crate) fn drain_records(
    engine: &Engine,
    ring: &mut RingBuf<MapData>,
    mut take: impl FnMut(Record) -> Result<()>,
) -> Result<()> {
    while let Some(item) = ring.next() {
        if let Some(r) = engine.take_record(records::decode(&item)?) {
            take(r)?;
        }
    }
    Ok(())
}

fn readable_fd<T: std::os::fd::AsRawFd>(inner: T) -> Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its descriptor, which stays open for as long as the AsyncFd holds it.
    unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering a descriptor with tokio: {e}"))
}
