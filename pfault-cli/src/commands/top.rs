//! `pfault top`: a live view of the processes faulting most, refreshed like top(1).
//! Counting stays in the kernel; each refresh reads and resets the per-process and per-file
//! counts, so rates are per interval and totals accumulate here.

use std::{
    collections::HashMap,
    io::{stdout, Stdout, Write},
    time::{Duration, Instant},
};

use anyhow::Result;
use crossterm::{
    cursor,
    event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    execute, queue,
    style::{Attribute, Print, SetAttribute},
    terminal::{self, ClearType},
};
use pfault_common::*;

use crate::{
    args::{CgroupColumnArgs, DurationArgs, FaultFilterArgs, IntervalArgs, TargetArgs},
    cgroup,
    engine::Engine,
    mappings::Mappings,
    output::{escape, hist::percentile},
    procfs::cstr,
    records::Record,
    session::{Handler, Session},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TopSort {
    /// Faults per second
    Rate,
    /// Major faults per second
    Major,
    /// Faults since start
    Total,
    /// 99th percentile latency
    Latency,
}

#[derive(clap::Args, Debug)]
pub(crate) struct TopArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,
    #[command(flatten)]
    pub(crate) filter: FaultFilterArgs,
    #[command(flatten)]
    pub(crate) interval: IntervalArgs,
    #[command(flatten)]
    pub(crate) duration: DurationArgs,
    /// Sort by (keys r, M, t, l change it while running)
    #[arg(long, value_enum, default_value_t = TopSort::Rate)]
    pub(crate) sort: TopSort,
    #[command(flatten)]
    pub(crate) cgroups: CgroupColumnArgs,
}

#[derive(Default)]
struct Proc {
    comm: String,
    cgroup: u64,
    rate: f64,
    major_rate: f64,
    minor: u64,
    major: u64,
    errors: u64,
    p99_ns: u64,
    /// Faults per file or mapping, since start.
    files: HashMap<String, u64>,
    seen: bool,
}

/// Restores the terminal however `top` ends.
struct Screen(Stdout);

impl Screen {
    /// Fails, before anything is loaded or started, where there is no terminal to draw in
    /// (crossterm reads keys from stdin, or /dev/tty when stdin is not one).
    fn check() -> Result<()> {
        use std::io::IsTerminal;
        let keys = std::io::stdin().is_terminal() || std::fs::File::open("/dev/tty").is_ok();
        if !stdout().is_terminal() || !keys {
            anyhow::bail!(
                "top draws in a terminal, and has none here: run it in one (for a log, use pfault stat -i 1)"
            );
        }
        Ok(())
    }

    fn open() -> Result<Screen> {
        terminal::enable_raw_mode()?;
        let mut out = stdout();
        execute!(out, terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(Screen(out))
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(self.0, cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

struct Top {
    screen: Screen,
    sort: TopSort,
    refresh: Duration,
    last_draw: Instant,
    procs: HashMap<u32, Proc>,
    maps: Mappings,
    mode: String,
    quit: bool,
    /// A CGROUP column (`--by-cgroup`).
    by_cgroup: bool,
    cgroups: cgroup::Names,
}

/// Input is polled this often; the screen is redrawn every `--interval`.
const KEY_POLL: Duration = Duration::from_millis(100);

impl Top {
    fn read_keys(&mut self) -> Result<()> {
        while event::poll(Duration::ZERO)? {
            if let Event::Key(k) = event::read()? {
                if k.kind != KeyEventKind::Press {
                    continue;
                }
                match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => self.quit = true,
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => self.quit = true,
                    KeyCode::Char('r') => self.sort = TopSort::Rate,
                    KeyCode::Char('M') => self.sort = TopSort::Major,
                    KeyCode::Char('t') => self.sort = TopSort::Total,
                    KeyCode::Char('l') => self.sort = TopSort::Latency,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn collect(&mut self, engine: &mut Engine, secs: f64) -> Result<()> {
        for p in self.procs.values_mut() {
            (p.rate, p.major_rate, p.seen) = (0.0, 0.0, false);
        }
        for (k, v) in engine.proc_stats(true)? {
            let p = self.procs.entry(k.tgid).or_default();
            let [minor, major, errors] = v.counts;
            p.comm = cstr(&v.comm).to_string();
            p.cgroup = v.cgroup;
            p.rate = (minor + major + errors) as f64 / secs;
            p.major_rate = major as f64 / secs;
            p.minor += minor;
            p.major += major;
            p.errors += errors;
            p.p99_ns = percentile(&v.hist, v.latency_max_ns, 0.99);
            p.seen = true;
        }
        for (k, v) in engine.file_counts(true)? {
            let full = self
                .maps
                .counted_name(k.tgid, k.map_kind as u8, k.dev, k.ino, &v.name);
            let name = full.rsplit('/').next().unwrap_or(&full).to_string();
            *self
                .procs
                .entry(k.tgid)
                .or_default()
                .files
                .entry(name)
                .or_default() += v.counts.iter().sum::<u64>();
        }
        Ok(())
    }

    fn draw(&mut self) -> Result<()> {
        let (cols, rows) = terminal::size().unwrap_or((120, 40));
        let mut list: Vec<(&u32, &Proc)> = self
            .procs
            .iter()
            .filter(|(_, p)| p.seen || p.minor + p.major > 0)
            .collect();
        let key = |p: &Proc| match self.sort {
            TopSort::Rate => p.rate,
            TopSort::Major => p.major_rate,
            TopSort::Total => (p.minor + p.major + p.errors) as f64,
            TopSort::Latency => p.p99_ns as f64,
        };
        list.sort_by(|a, b| key(b.1).total_cmp(&key(a.1)));
        let out = &mut self.screen.0;
        queue!(out, cursor::MoveTo(0, 0), terminal::Clear(ClearType::All))?;
        let title = format!(
            "pfault top - {}  every {:.1}s  {}  sort: {:?}   keys: r rate, M major, t total, l latency, q quit",
            crate::output::clock(),
            self.refresh.as_secs_f64(),
            self.mode,
            self.sort
        );
        queue!(out, Print(fit(&title, cols)), cursor::MoveToNextLine(2))?;
        let by_cgroup = self.by_cgroup;
        let header = format!(
            "{:>7} {:<16} {}{:>10} {:>9} {:>12} {:>10} {:>8} {:>9}  {}",
            "PID",
            "COMM",
            if by_cgroup {
                format!("{:<32} ", "CGROUP")
            } else {
                String::new()
            },
            "FAULTS/s",
            "MAJOR/s",
            "MINOR",
            "MAJOR",
            "ERRORS",
            "P99us",
            "TOP MAPPING"
        );
        queue!(
            out,
            SetAttribute(Attribute::Reverse),
            Print(fit(&header, cols)),
            SetAttribute(Attribute::Reset)
        )?;
        queue!(out, cursor::MoveToNextLine(1))?;
        for (pid, p) in list.iter().take(rows.saturating_sub(4) as usize) {
            let top = p
                .files
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(f, _)| f.as_str())
                .unwrap_or("-");
            let cgroup = if by_cgroup {
                format!("{:<32} ", self.cgroups.name(p.cgroup))
            } else {
                String::new()
            };
            let line = format!(
                "{pid:>7} {:<16} {cgroup}{:>10.0} {:>9.0} {:>12} {:>10} {:>8} {:>9.1}  {top}",
                p.comm,
                p.rate,
                p.major_rate,
                p.minor,
                p.major,
                p.errors,
                p.p99_ns as f64 / 1000.0
            );
            queue!(out, Print(fit(&line, cols)), cursor::MoveToNextLine(1))?;
        }
        out.flush()?;
        Ok(())
    }
}

/// A line cut to the screen's width, escaped: a process or file name could otherwise move
/// the cursor or recolour the screen.
fn fit(s: &str, cols: u16) -> String {
    escape(s).chars().take(cols as usize).collect()
}

impl Handler for Top {
    fn record(&mut self, record: Record) -> Result<()> {
        self.maps.notice(&record);
        Ok(())
    }

    fn tick(&mut self, engine: &mut Engine, last: bool) -> Result<()> {
        self.read_keys()?;
        let secs = self.last_draw.elapsed().as_secs_f64();
        if !last && (secs >= self.refresh.as_secs_f64() || self.procs.is_empty() && secs > 0.5) {
            self.collect(engine, secs)?;
            self.last_draw = Instant::now();
            self.draw()?;
        }
        Ok(())
    }

    fn quit(&self) -> bool {
        self.quit
    }
}

pub(crate) async fn run(args: TopArgs) -> Result<Option<i32>> {
    let mut flags = CFG_OUT_PROCS | CFG_OUT_FILES | CFG_NOTIFY_TASKS;
    if args.cgroups.by_cgroup {
        flags |= CFG_BY_CGROUP;
    }
    let mut plan = args.filter.plan(flags);
    plan.ringbuf_bytes = 256 << 10;
    Screen::check()?;
    let mut session = Session::start(&args.target, None, &plan)?;
    let mut ring = session.events()?;
    let refresh = args
        .interval
        .interval
        .unwrap_or(Duration::from_secs(1))
        .max(KEY_POLL);
    let mut top = Top {
        screen: Screen::open()?,
        sort: args.sort,
        refresh,
        last_draw: Instant::now(),
        procs: HashMap::new(),
        maps: Mappings::default(),
        mode: session.engine.describe(),
        quit: false,
        by_cgroup: args.cgroups.by_cgroup,
        cgroups: cgroup::Names::default(),
    };
    top.draw()?;
    let end = session
        .run(&args.duration, Some(KEY_POLL), Some(&mut ring), &mut top)
        .await?;
    // The screen is restored before the summary is said.
    drop(top);
    session.finish(end, crate::output::Format::Text, None, "process notices")
}
