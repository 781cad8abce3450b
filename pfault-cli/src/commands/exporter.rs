//! `pfault exporter`: the host's page faults (or those of `-c`, `-p`, `--cgroup`) for the
//! tools fleets run: `/metrics` for Prometheus, `/debug/pprof/faults?seconds=N` for the
//! pprof scrapers of Parca and Pyroscope and for `go tool pprof`.
//!
//! One task owns the kernel side and the series; the HTTP handlers ask it through a channel.
//! The kernel counts per process; every `--collect-every` the new counts move into series
//! keyed by process name, kind, mode and cgroup, and the rows of processes that are gone are
//! dropped from the kernel's map, so neither the kernel's map nor pfault's memory grows with
//! the processes a host runs over days.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use axum::{
    extract::{Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use aya::maps::{MapData, RingBuf};
use pfault_common::*;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    sync::{mpsc, oneshot},
};

use crate::{
    args::{FaultFilterArgs, ProcessArgs, TargetArgs, UnwindArgs, COLLECT_EVERY},
    cgroup,
    engine::{Engine, Kind},
    mappings::Mappings,
    output::prometheus::{FaultLabels, LatencyLabels, Metrics},
    session::{self, Session},
    stacks::{self, StackCounts},
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

/// What a handler asks the exporter's task for.
enum Job {
    Metrics(oneshot::Sender<String>),
    Profile {
        seconds: u64,
        reply: oneshot::Sender<Result<Vec<u8>, (StatusCode, String)>>,
    },
}

/// Longest profile a request may ask for, seconds.
const MAX_PROFILE: u64 = 300;
/// In-flight requests at once; more wait.
const MAX_REQUESTS: usize = 8;
/// The most a /metrics request waits for the exporter's task.
const METRICS_TIMEOUT: Duration = Duration::from_secs(10);

/// A process row's totals when last collected.
#[derive(Default)]
struct Seen {
    counts: [u64; 3],
    kernel: [u64; 3],
    latency_sum_ns: u64,
    hist: Option<Box<[u64; HIST_BUCKETS]>>,
}

/// A pprof profile being taken, by a second, stack-counting engine of its own.
struct Profiling {
    session: Session,
    ring: AsyncFd<RingBuf<MapData>>,
    counts: StackCounts,
    /// When the counts of processes that are gone were last folded.
    folded: Instant,
    until: Instant,
    reply: oneshot::Sender<Result<Vec<u8>, (StatusCode, String)>>,
}

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

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl Exporter {
    /// Moves the kernel's new counts into the series.
    fn collect(&mut self, engine: &mut Engine) -> Result<()> {
        let doomed = std::mem::take(&mut self.doomed_procs);
        for (k, v) in engine.proc_stats(false)? {
            let seen = self.procs.entry(k).or_default();
            let comm = crate::procfs::cstr(&v.comm).to_string();
            let cgroup = self.cgroups.name(v.cgroup);
            for (i, kind) in Kind::ALL.iter().enumerate() {
                let kernel = v.kernel[i].saturating_sub(seen.kernel[i]);
                let all = v.counts[i].saturating_sub(seen.counts[i]);
                for (mode, n) in [("user", all.saturating_sub(kernel)), ("kernel", kernel)] {
                    let labels = FaultLabels {
                        comm: comm.clone(),
                        kind: kind.name().into(),
                        mode: mode.into(),
                        cgroup: cgroup.clone(),
                    };
                    self.metrics.add_faults(labels, n);
                }
            }
            if self.args.latency {
                let prev = seen.hist.get_or_insert_with(|| Box::new([0; HIST_BUCKETS]));
                let mut delta = [0u64; HIST_BUCKETS];
                for (d, (now, was)) in delta.iter_mut().zip(v.hist.iter().zip(prev.iter())) {
                    *d = now.saturating_sub(*was);
                }
                **prev = v.hist;
                let sum = v.latency_sum_ns.saturating_sub(seen.latency_sum_ns);
                self.metrics
                    .add_latency(LatencyLabels { comm, cgroup }, &delta, sum);
            }
            (seen.counts, seen.kernel, seen.latency_sum_ns) = (v.counts, v.kernel, v.latency_sum_ns);
            if !alive(k.tgid) && !doomed.contains(&k) {
                self.doomed_procs.push(k);
            }
        }
        engine.forget_procs(&doomed)?;
        for k in &doomed {
            self.procs.remove(k);
        }
        if self.args.by_file {
            self.collect_files(engine)?;
        }
        let lost = engine.losses()?;
        for (what, n) in [
            ("ringbuf", lost.ringbuf),
            ("untracked", lost.untracked),
            ("stacks", lost.stacks_lost),
            ("map_full", lost.map_full),
            ("vma_busy", lost.vma_busy),
        ] {
            self.metrics.set_lost(what, n);
        }
        Ok(())
    }

    /// Drops the maps of processes that are gone and have no rows left to name, and gives
    /// the allocator's free pages back. Maps are read for every process the kernel announces
    /// but were dropped only with a process's last file row, and some processes leave without
    /// one being doomed (seen: a shell's forked children): 155 dead processes' maps (7,000
    /// entries) were held after a minute of 70 new processes a second.
    fn tidy(&mut self) {
        let counted: HashSet<u32> = self
            .procs
            .keys()
            .map(|k| k.tgid)
            .chain(self.files.keys().map(|k| k.tgid))
            .collect();
        self.maps.retain(|pid| counted.contains(&pid) || alive(pid));
        // A profile folds its dead processes' maps with their counts; these are the maps of
        // those that died without a count (notices of processes that never faulted).
        if let Some(p) = &mut self.profiling {
            p.counts.syms.maps.retain(alive);
        }
        release_free_memory();
    }

    fn collect_files(&mut self, engine: &mut Engine) -> Result<()> {
        let doomed = std::mem::take(&mut self.doomed_files);
        for (k, v) in engine.file_counts(false)? {
            let file = self
                .maps
                .counted_name(k.tgid, k.map_kind as u8, k.dev, k.ino, &v.name);
            let seen = self.files.entry(k).or_default();
            for (i, kind) in Kind::ALL.iter().enumerate() {
                self.metrics
                    .add_file_faults(&file, kind.name(), v.counts[i].saturating_sub(seen[i]));
            }
            *seen = v.counts;
            if !alive(k.tgid) && !doomed.contains(&k) {
                self.doomed_files.push(k);
            }
        }
        engine.forget_files(&doomed)?;
        for k in &doomed {
            self.files.remove(k);
            self.maps.forget(k.tgid);
        }
        Ok(())
    }

    fn start_profile(&mut self, seconds: u64, reply: oneshot::Sender<Result<Vec<u8>, (StatusCode, String)>>) {
        if let Some(p) = &self.profiling {
            let left = p.until.saturating_duration_since(Instant::now()).as_secs() + 1;
            let _ = reply.send(Err((
                StatusCode::TOO_MANY_REQUESTS,
                format!("a profile is being taken: try again in {left} s\n"),
            )));
            return;
        }
        let mut plan = stacks::plan(
            true,
            true,
            &self.args.filter,
            pfault_common::capacity::STACK_COUNTS,
        );
        self.args.unwind.apply(&mut plan);
        let started = Session::start(&self.args.session_target(), None, &plan).and_then(|mut session| {
            let ring = session.events()?;
            Ok((session, ring))
        });
        match started {
            Ok((session, ring)) => {
                let max = self.args.max_profile_stacks;
                let counts = StackCounts::new(session.symbols(self.args.target.pid), false, false)
                    .capped(max, format!("[stacks past --max-profile-stacks {max}]"));
                self.profiling = Some(Profiling {
                    counts,
                    folded: Instant::now(),
                    session,
                    ring,
                    until: Instant::now() + Duration::from_secs(seconds),
                    reply,
                })
            }
            Err(e) => {
                let _ = reply.send(Err((StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n"))));
            }
        }
    }

    /// Reads a profile's stacks as they come, and answers it when its time is up.
    fn tend_profile(&mut self) -> Result<()> {
        let Some(p) = &mut self.profiling else {
            return Ok(());
        };
        // The client gave up (its connection closed, so its handler and receiver are gone):
        // the profile ends now, and the next one can start.
        if p.reply.is_closed() {
            self.profiling = None;
            return Ok(());
        }
        let gone = if p.folded.elapsed() >= FOLD_EVERY {
            p.folded = Instant::now();
            Some(p.counts.gone(&mut p.session.engine, alive)?)
        } else {
            None
        };
        let counts = &mut p.counts;
        session::drain_records(&p.session.engine, p.ring.get_mut(), |r| {
            counts.record(r);
            Ok(())
        })?;
        if let Some(gone) = gone {
            p.counts.fold(&mut p.session.engine, gone)?;
            // What the gone processes held lies scattered through the heap.
            release_free_memory();
        }
        if Instant::now() < p.until {
            return Ok(());
        }
        let mut p = self.profiling.take().expect("checked above");
        let body = p
            .counts
            .rows(&mut p.session.engine, true)
            .and_then(|rows| p.counts.pprof(&rows).gzipped())
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")));
        let _ = p.reply.send(body);
        Ok(())
    }
}

async fn metrics(State(jobs): State<mpsc::Sender<Job>>) -> Response {
    let (reply, answer) = oneshot::channel();
    if jobs.send(Job::Metrics(reply)).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match tokio::time::timeout(METRICS_TIMEOUT, answer).await {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        _ => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// How long a profile runs: as Go's /debug/pprof/profile, 30 s unless asked; anything but a
/// whole number of seconds from 1 to [`MAX_PROFILE`] is refused, not quietly changed. The
/// query comes as pairs, which any query string is, so a bad value is answered in words and
/// not in serde's.
fn profile_seconds(query: &[(String, String)]) -> Result<u64, String> {
    let Some((_, given)) = query.iter().rev().find(|(k, _)| k == "seconds") else {
        return Ok(30);
    };
    match given.trim().parse::<u64>() {
        Ok(s) if (1..=MAX_PROFILE).contains(&s) => Ok(s),
        _ => Err(format!(
            "seconds={given}: give a whole number of seconds from 1 to {MAX_PROFILE}\n"
        )),
    }
}

async fn profile(
    State(jobs): State<mpsc::Sender<Job>>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let seconds = match profile_seconds(&query) {
        Ok(s) => s,
        Err(text) => return (StatusCode::BAD_REQUEST, text).into_response(),
    };
    let (reply, answer) = oneshot::channel();
    if jobs.send(Job::Profile { seconds, reply }).await.is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match tokio::time::timeout(Duration::from_secs(seconds) + METRICS_TIMEOUT, answer).await {
        Ok(Ok(Ok(body))) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"faults.pb.gz\"",
                ),
            ],
            body,
        )
            .into_response(),
        Ok(Ok(Err((status, text)))) => (status, text).into_response(),
        _ => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

pub(crate) async fn run(args: ExporterArgs) -> Result<Option<i32>> {
    // Faults are timed (entry and completion): the kernel's own accounting has no mode.
    let mut flags = CFG_OUT_PROCS | CFG_BY_CGROUP;
    if args.by_file {
        flags |= CFG_OUT_FILES | CFG_NOTIFY_TASKS | CFG_NOTIFY_MAPS;
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
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/debug/pprof/faults", get(profile))
        .with_state(jobs)
        .layer(tower::limit::ConcurrencyLimitLayer::new(MAX_REQUESTS));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
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
            _ = tend.tick() => {
                if let Some(ring) = ring.as_mut() {
                    let maps = &mut exporter.maps;
                    session::drain_records(&session.engine, ring.get_mut(), |r| {
                        maps.notice(&r);
                        Ok(())
                    })?;
                }
                exporter.tend_profile()?;
            }
        }
        session.engine.flush_log();
    }
    server.abort();
    Ok(None)
}

const TIDY_EVERY: Duration = Duration::from_secs(10);
/// How often a profile folds the counts of processes that are gone: what it holds of them
/// until then grows with the processes started meanwhile (about 50 KiB each, for a small C
/// program).
const FOLD_EVERY: Duration = Duration::from_secs(1);

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
