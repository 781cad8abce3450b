//! `pfault exporter`: the host's page faults (or those of `-c`, `-p`, `--cgroup`) for the
//! tools fleets run: `/metrics` for Prometheus, `/debug/pprof/faults?seconds=N` for the
//! pprof scrapers of Parca and Pyroscope and for `go tool pprof`.
//!
//! One task owns the kernel side and the series; the HTTP handlers ask it through a channel.
//! The kernel counts per process; every `--collect-every` the new counts move into series
//! keyed by process name, kind, mode and cgroup, and the rows of processes that are gone are
//! dropped from the kernel's map, so neither the kernel's map nor pfault's memory grows with
//! the processes a host runs over days.

mod collect;
mod http;
mod profile;

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use pfault_common::*;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use self::{
    collect::Seen,
    http::{Job, MAX_REQUESTS},
    profile::Profiling,
};
use crate::{
    args::{FaultFilterArgs, ProcessArgs, TargetArgs, UnwindArgs, COLLECT_EVERY},
    cgroup,
    engine::Engine,
    mappings::Mappings,
    output::prometheus::Metrics,
    session::{self, Session},
};

#[derive(clap::Args, Debug)]
pub(crate) struct ExporterArgs {
    #[command(flatten)]
    pub(crate) target: ProcessArgs,
    /// Address to serve /metrics and /debug/pprof/faults on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub(crate) listen: SocketAddr,
    /// Latency histograms per process name and cgroup (pfault_page_fault_latency_seconds)
    #[arg(short = 'L', long)]
    pub(crate) latency: bool,
    /// Faults per file and kind (pfault_file_page_faults_total); costs a mapping lookup per
    /// fault
    #[arg(long)]
    pub(crate) by_file: bool,
    /// With --by-file: the first N files to fault get a series each; the rest add to
    /// file="_other"
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub(crate) max_files: usize,
    /// Series kept apart (process name, kind, mode, cgroup); past the cap new ones add to
    /// comm="_other", so memory stays flat however many processes come and go
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub(crate) max_series: usize,
    /// Stacks a profile keeps apart (per process name and kind); past the cap, the faults of
    /// new ones add to a stack named for the cap, under comm="_other"
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub(crate) max_profile_stacks: usize,
    /// Move the kernel's counts into the series every SECONDS (and at every scrape)
    #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = COLLECT_EVERY.parser())]
    pub(crate) collect_every: Duration,
    #[command(flatten)]
    pub(crate) filter: FaultFilterArgs,
    /// How /debug/pprof/faults walks user stacks
    #[command(flatten)]
    pub(crate) unwind: UnwindArgs,
}

impl ExporterArgs {
    /// The processes chosen, as a session takes them: never a command, since the exporter
    /// runs until it is stopped.
    fn session_target(&self) -> TargetArgs {
        TargetArgs {
            processes: self.target.clone(),
            command: Vec::new(),
        }
    }
}

/// The exporter's task: the series, and the profile being taken.
struct Exporter {
    args: ExporterArgs,
    metrics: Metrics,
    procs: HashMap<ProcKey, Seen>,
    files: HashMap<FileKey, [u64; 3]>,
    /// Rows whose process was gone at the last collection: read once more (their last
    /// counts, folded at exit), then dropped.
    doomed_procs: Vec<ProcKey>,
    doomed_files: Vec<FileKey>,
    cgroups: cgroup::Names,
    maps: Mappings,
    profiling: Option<Profiling>,
}

pub(crate) async fn run(args: ExporterArgs) -> Result<Option<i32>> {
    let mut flags = CFG_OUT_PROCS | CFG_BY_CGROUP;
    if args.by_file {
        flags |= CFG_OUT_FILES | CFG_NOTIFY_TASKS | CFG_NOTIFY_MAPS;
    }
    // Counts alone come from the kernel's own accounting, each move given the mode of the
    // exception before it: one cheap probe per fault, no clock read. Latencies, files and
    // the filters that judge each fault time it from entry to completion.
    if !args.latency && !args.by_file && !args.filter.needs_fault_entry() {
        flags |= CFG_ACCOUNTED | CFG_ACCOUNTED_MODES;
    }
    let mut plan = args.filter.plan(flags);
    if args.by_file {
        plan.ringbuf_bytes = 256 << 10;
    }
    // Bound before anything is loaded: a taken port is one clear line.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: choose another --listen address",
                args.listen
            )
        })?;
    // Port 0 asks the kernel for a free one: say the one it gave.
    let bound = listener.local_addr().unwrap_or(args.listen);
    let mut session = Session::start(&args.session_target(), None, &plan)?;
    let mut ring = args.by_file.then(|| session.events()).transpose()?;
    let (jobs, mut requests) = mpsc::channel(MAX_REQUESTS);
    let server = tokio::spawn(async move { axum::serve(listener, http::router(jobs)).await });
    eprintln!("pfault: serving http://{bound}/metrics and http://{bound}/debug/pprof/faults?seconds=N");
    let mut exporter = Exporter {
        metrics: Metrics::new(args.max_series, args.max_files),
        procs: HashMap::new(),
        files: HashMap::new(),
        doomed_procs: Vec::new(),
        doomed_files: Vec::new(),
        cgroups: cgroup::Names::default(),
        maps: Mappings::default(),
        profiling: None,
        args,
    };
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    // From here tokio sees every signal; one before is in the note.
    crate::signals::check()?;
    let mut collect = tokio::time::interval(exporter.args.collect_every);
    let mut tend = tokio::time::interval(Duration::from_millis(50));
    let mut tidy = tokio::time::interval(TIDY_EVERY);
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            // As every tool's -p: the process it was to watch is gone.
            r = session.target_exited() => {
                r?;
                break;
            }
            job = requests.recv() => match job {
                Some(Job::Metrics(reply)) => {
                    exporter.collect(&mut session.engine)?;
                    let _ = reply.send(exporter.metrics.encode());
                }
                Some(Job::Profile { seconds, reply }) => exporter.start_profile(seconds, reply),
                None => break,
            },
            _ = collect.tick() => exporter.collect(&mut session.engine)?,
            _ = tidy.tick() => exporter.tidy(),
            // Records as they come, not at the next tick: a process that lives a few
            // milliseconds has its maps read while it lives (its exec wakes the ring), so its
            // frames are named after it exits.
            _ = readable(ring.as_ref()) => exporter.notice_records(&session.engine, ring.as_mut())?,
            _ = readable(exporter.profiling.as_ref().map(|p| &p.ring)) => exporter.tend_profile()?,
            _ = tend.tick() => {
                exporter.notice_records(&session.engine, ring.as_mut())?;
                exporter.tend_profile()?;
            }
        }
        session.engine.flush_log();
    }
    server.abort();
    Ok(None)
}

/// Waits until `fd` has something to read (forever where there is none), and takes the
/// readiness: what is there is read next, and a later record makes it ready again.
async fn readable<T: std::os::fd::AsRawFd>(fd: Option<&AsyncFd<T>>) {
    match fd {
        Some(fd) => {
            if let Ok(mut ready) = fd.readable().await {
                ready.clear_ready();
            }
        }
        None => std::future::pending().await,
    }
}

impl Exporter {
    /// Notes the processes and files the exporter's own ring reports (`--by-file`).
    fn notice_records(
        &mut self,
        engine: &Engine,
        ring: Option<&mut AsyncFd<RingBuf<MapData>>>,
    ) -> Result<()> {
        if let Some(ring) = ring {
            let maps = &mut self.maps;
            session::drain_records(engine, ring.get_mut(), |r| {
                maps.notice(&r);
                Ok(())
            })?;
        }
        Ok(())
    }
}

const TIDY_EVERY: Duration = Duration::from_secs(10);

/// Hands the allocator's free pages back to the kernel. A daemon that reads the maps of
/// every new process frees about as much as it allocates, but the freed pieces lie scattered
/// through the heap, which glibc does not give back by itself: RSS grows with free memory.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory no allocation holds.
    unsafe {
        libc::malloc_trim(0);
    }
}
