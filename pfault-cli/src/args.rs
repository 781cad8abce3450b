//! Argument groups shared by the subcommands, in the conventions of bcc, bpftrace and perf.
//! A subcommand flattens the groups it takes; none of them is declared twice.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Result};
use pfault_common::{MODE_KERNEL, MODE_USER};

use crate::{
    engine::{Kind, Plan, ProbeMode},
    output::{self, Format},
    unwind::{rows_for_mb, Unwind, UNWIND_MB},
};

/// Which running processes to look at.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct ProcessArgs {
    /// Every process (the default where no PID, COMM or command is given)
    #[arg(short, long, conflicts_with = "pid")]
    pub(crate) all: bool,
    /// Only this process (all its threads); stop when it exits
    #[arg(short, long, value_name = "PID")]
    pub(crate) pid: Option<u32>,
    /// Only processes with this command name (as in /proc/PID/comm)
    #[arg(short, long, value_name = "COMM")]
    pub(crate) comm: Option<String>,
    /// Only processes in this cgroup v2 or below it: a directory under the cgroup2 mount, or
    /// a path as /proc/PID/cgroup writes it (/system.slice/foo.service)
    #[arg(long, value_name = "PATH")]
    pub(crate) cgroup: Option<PathBuf>,
}

/// Which processes to look at: running ones, or a command pfault starts. (The exporter,
/// which runs until stopped, takes [`ProcessArgs`] alone.)
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct TargetArgs {
    #[command(flatten)]
    pub(crate) processes: ProcessArgs,
    /// Start this command and trace it and its children from their first instruction
    #[arg(last = true, value_name = "CMD", conflicts_with_all = ["all", "pid"])]
    pub(crate) command: Vec<String>,
}

/// `target.pid` and the like read as the processes' own fields: a command is one more way
/// to choose, not another kind of target.
impl std::ops::Deref for TargetArgs {
    type Target = ProcessArgs;

    fn deref(&self) -> &ProcessArgs {
        &self.processes
    }
}

/// Rows that say their process's cgroup.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct CgroupColumnArgs {
    /// Show each row's cgroup v2 (a CGROUP column; a `cgroup` field in JSON)
    #[arg(long)]
    pub(crate) by_cgroup: bool,
}

#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct DurationArgs {
    /// Stop after SECONDS (0: attach, then stop at once)
    #[arg(short, long, value_name = "SECONDS", value_parser = RUN_TIME.parser())]
    pub(crate) duration: Option<Duration>,
}

#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct IntervalArgs {
    /// Print (and reset) every SECONDS (at least 0.01)
    #[arg(short, long, value_name = "SECONDS", value_parser = INTERVAL.parser())]
    pub(crate) interval: Option<Duration>,
}

/// The longest span of time a flag takes: longer than any trace is run for, and far from
/// where adding it to the clock could overflow (`inf` and `1e30` are typing errors).
const YEAR_S: f64 = 365.0 * 24.0 * 3600.0;

/// A span of time a flag takes, as a number of `unit`s between `min` and `max`: the one
/// parser of every duration, interval and latency flag, so no subcommand converts a float
/// (NaN, infinity, a negative or a huge value) itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    unit: &'static str,
    ns_per_unit: f64,
    min: f64,
    max: f64,
}

/// `-d`: 0 attaches, then stops at once.
pub(crate) const RUN_TIME: Span = Span::seconds(0.0, YEAR_S);
/// `-i`: printing (and resetting the kernel's counts) more than 100 times a second reads
/// whole maps for nothing a person or a log could follow; perf stat -I has the same floor.
pub(crate) const INTERVAL: Span = Span::seconds(0.01, YEAR_S);
/// The exporter's `--collect-every`: each collection walks every process's row; Prometheus
/// scrapes every few seconds, and every scrape collects anyway.
pub(crate) const COLLECT_EVERY: Span = Span::seconds(0.1, YEAR_S);
/// `--min-latency`, microseconds: up to an hour (a fault on a hung NFS mount lasts minutes).
pub(crate) const MIN_LATENCY: Span = Span {
    unit: "microseconds",
    ns_per_unit: 1e3,
    min: 0.0,
    max: 3600.0 * 1e6,
};

impl Span {
    const fn seconds(min: f64, max: f64) -> Span {
        Span {
            unit: "seconds",
            ns_per_unit: 1e9,
            min,
            max,
        }
    }

    /// `text` as a duration, or why not: the message clap shows after the flag's name.
    pub(crate) fn parse(self, text: &str) -> Result<Duration, String> {
        match text.trim().parse::<f64>() {
            // NaN fails both comparisons.
            Ok(v) if v >= self.min && v <= self.max => {
                Ok(Duration::from_nanos((v * self.ns_per_unit).round() as u64))
            }
            _ => Err(format!(
                "must be a number of {} from {} to {}",
                self.unit, self.min, self.max
            )),
        }
    }

    /// [`Self::parse`] as a clap value parser.
    pub(crate) fn parser(self) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
        move |text| self.parse(text)
    }
}

/// How user stacks are walked, for the subcommands that take them.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct UnwindArgs {
    /// How user stacks are walked: cfi follows each binary's .eh_frame (callers of memset
    /// and of code built without frame pointers kept), fp the frame pointers alone
    #[arg(long, value_enum, value_name = "HOW", default_value = "cfi")]
    pub(crate) unwind: Unwind,
    /// Kernel memory for unwind tables, MiB (8 bytes a row; the C library takes about 250 KiB)
    #[arg(long, value_name = "MIB", default_value_t = UNWIND_MB, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) unwind_mb: u32,
}

impl Default for UnwindArgs {
    fn default() -> Self {
        UnwindArgs {
            unwind: Unwind::Cfi,
            unwind_mb: UNWIND_MB,
        }
    }
}

impl UnwindArgs {
    /// Asks for CFI unwinding in `plan` where it walks user stacks.
    pub(crate) fn apply(&self, plan: &mut Plan) {
        if self.unwind == Unwind::Cfi && plan.flags & pfault_common::CFG_USTACK != 0 {
            plan.flags |= pfault_common::CFG_UNWIND_CFI;
            plan.unwind_rows = rows_for_mb(self.unwind_mb);
        }
    }
}

/// Filters every tracing subcommand applies in the kernel.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct FaultFilterArgs {
    /// Only faults raised in user mode
    #[arg(long, conflicts_with = "kernel_faults")]
    pub(crate) user_faults: bool,
    /// Only faults raised in kernel mode (copy_to_user and the like)
    #[arg(long)]
    pub(crate) kernel_faults: bool,
    /// Only these kinds of fault
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KIND")]
    pub(crate) kind: Vec<Kind>,
    /// Only faults that took at least this many microseconds
    #[arg(long, value_name = "US", value_parser = MIN_LATENCY.parser())]
    pub(crate) min_latency: Option<Duration>,
    /// Probe mode (default: the best this kernel allows, see `pfault probes`)
    #[arg(long, value_enum)]
    pub(crate) probe: Option<ProbeMode>,
    /// Log the kernel side's rare events (a map that filled, a probe the kernel refused to
    /// nest) to stderr as they happen; costs nothing per fault when off
    #[arg(long)]
    pub(crate) bpf_log: bool,
}

impl FaultFilterArgs {
    /// A plan with these filters applied.
    pub(crate) fn plan(&self, flags: u32) -> Plan {
        Plan {
            kinds: Kind::mask(&self.kinds()),
            modes: self.modes(),
            min_latency_ns: self.min_latency_ns(),
            probe: self.probe,
            bpf_log: self.bpf_log,
            ..Plan::new(flags)
        }
    }

    /// The kinds asked for; all of them when none was named.
    pub(crate) fn kinds(&self) -> Vec<Kind> {
        if self.kind.is_empty() {
            Kind::ALL.to_vec()
        } else {
            self.kind.clone()
        }
    }

    /// `Config::modes`: user faults, kernel faults, or both.
    pub(crate) fn modes(&self) -> u32 {
        match (self.user_faults, self.kernel_faults) {
            (true, _) => MODE_USER,
            (_, true) => MODE_KERNEL,
            _ => MODE_USER | MODE_KERNEL,
        }
    }

    pub(crate) fn min_latency_ns(&self) -> u64 {
        self.min_latency.map_or(0, |d| d.as_nanos() as u64)
    }

    /// Whether a filter here must see each fault where it enters the handler: a latency needs
    /// its start, user/kernel its error code, and a named probe must be the one that sees it.
    /// Counting where faults complete, or from the kernel's own accounting, applies none of
    /// them. (Error faults, which never complete, are each tool's own question.)
    pub(crate) fn needs_fault_entry(&self) -> bool {
        self.min_latency.is_some() || self.user_faults || self.kernel_faults || self.probe.is_some()
    }
}

/// Where results go: stdout, or the file given with `--output`; `F` is the formats the tool
/// writes (stackcount's include pprof).
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct OutputArgs<F: clap::ValueEnum + Clone + Default + Send + Sync + 'static = Format> {
    /// Output format
    #[arg(short = 'o', long = "format", value_enum, default_value_t)]
    pub(crate) format: F,
    /// Write results to FILE instead of stdout
    #[arg(long = "output", value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
}

impl<F: clap::ValueEnum + Clone + Default + Send + Sync + 'static> OutputArgs<F> {
    /// Checks the destination now, so an unwritable file fails before any probe is attached.
    pub(crate) fn reserve(&self) -> Result<output::Destination> {
        output::Destination::reserve(self.file.as_deref())
    }
}

/// A size argument with the kernel's limit on it, checked before anything is loaded so the
/// error names the flag.
pub(crate) fn check_size(flag: &str, value: u32, min: u32, max: u32, unit: &str) -> Result<u32> {
    if value < min || value > max {
        bail!("{flag} {value}: must be between {min} and {max}{unit}");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_take_finite_numbers_within_their_bounds() {
        assert_eq!(RUN_TIME.parse("0"), Ok(Duration::ZERO));
        assert_eq!(RUN_TIME.parse("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(RUN_TIME.parse(" 2 "), Ok(Duration::from_secs(2)));
        assert_eq!(RUN_TIME.parse("31536000"), Ok(Duration::from_secs(31_536_000)));
        assert_eq!(INTERVAL.parse("0.01"), Ok(Duration::from_millis(10)));
        assert_eq!(INTERVAL.parse("1e-2"), Ok(Duration::from_millis(10)));
        assert_eq!(COLLECT_EVERY.parse("0.1"), Ok(Duration::from_millis(100)));
        // Rounded, not truncated: 0.3 us is 299.99.. ns as a float.
        assert_eq!(MIN_LATENCY.parse("0.3"), Ok(Duration::from_nanos(300)));
        assert_eq!(MIN_LATENCY.parse("250"), Ok(Duration::from_micros(250)));
        for (span, bad) in [
            (RUN_TIME, "inf"),
            (RUN_TIME, "-inf"),
            (RUN_TIME, "NaN"),
            (RUN_TIME, "1e30"),
            (RUN_TIME, "31536000.5"),
            (RUN_TIME, "-1"),
            (RUN_TIME, "-0.0000001"),
            (RUN_TIME, ""),
            (RUN_TIME, "1s"),
            (INTERVAL, "0"),
            (INTERVAL, "0.009"),
            (INTERVAL, "NaN"),
            (INTERVAL, "infinity"),
            (COLLECT_EVERY, "0.000001"),
            (COLLECT_EVERY, "nan"),
            (MIN_LATENCY, "NaN"),
            (MIN_LATENCY, "-5"),
            (MIN_LATENCY, "1e300"),
        ] {
            let err = span.parse(bad).expect_err(bad);
            assert!(
                err.contains(span.unit)
                    && err.contains(&span.min.to_string())
                    && err.contains(&span.max.to_string()),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            INTERVAL.parse("0").unwrap_err(),
            "must be a number of seconds from 0.01 to 31536000"
        );
    }

    #[test]
    fn every_span_flag_refuses_what_its_parser_refuses() {
        use clap::Parser;
        let parse = |args: &[&str]| crate::cli::Cli::try_parse_from(args.iter().copied()).map(|_| ());
        for args in [
            &["pfault", "trace", "-d", "inf"][..],
            &["pfault", "stat", "-a", "-i", "0"],
            &["pfault", "stat", "-a", "--min-latency", "NaN"],
            &["pfault", "top", "-d", "1e30"],
            &["pfault", "exporter", "--collect-every", "0.000001"],
        ] {
            let e = parse(args).expect_err(&args.join(" "));
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{args:?}");
        }
        parse(&["pfault", "stackcount", "-a", "-d", "0", "-i", "0.5"]).unwrap();
    }

    #[test]
    fn entry_is_needed_only_by_filters_completion_cannot_apply() {
        let none = FaultFilterArgs::default();
        assert!(!none.needs_fault_entry());
        for f in [
            FaultFilterArgs {
                min_latency: Some(Duration::from_micros(1)),
                ..Default::default()
            },
            FaultFilterArgs {
                user_faults: true,
                ..Default::default()
            },
            FaultFilterArgs {
                kernel_faults: true,
                ..Default::default()
            },
            FaultFilterArgs {
                probe: Some(ProbeMode::Tracepoint),
                ..Default::default()
            },
        ] {
            assert!(f.needs_fault_entry(), "{f:?}");
        }
    }
}
