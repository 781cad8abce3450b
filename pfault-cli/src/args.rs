//! Argument groups shared by the subcommands, in the conventions of bcc, bpftrace and perf.
//! A subcommand flattens the groups it takes; none of them is declared twice.

use std::path::PathBuf;

use anyhow::{bail, Result};
use pfault_common::{MODE_KERNEL, MODE_USER};

use crate::{
    engine::{Kind, Plan, ProbeMode},
    output::Format,
    unwind::{rows_for_mb, Unwind, UNWIND_MB},
};

/// Which processes to look at.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TargetArgs {
    /// Every process (the default where no PID, COMM or command is given)
    #[arg(short, long, conflicts_with_all = ["pid", "command"])]
    pub all: bool,
    /// Only this process (all its threads); stop when it exits
    #[arg(short, long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<u32>,
    /// Only processes with this command name (as in /proc/PID/comm)
    #[arg(short, long, value_name = "COMM")]
    pub comm: Option<String>,
    /// Only processes in this cgroup v2 or below it: a directory under the cgroup2 mount, or
    /// a path as /proc/PID/cgroup writes it (/system.slice/foo.service)
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Start this command and trace it and its children from their first instruction
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl TargetArgs {
    /// Nothing named: neither -a, -p, -c, --cgroup nor a command.
    pub fn is_unset(&self) -> bool {
        !self.all
            && self.pid.is_none()
            && self.comm.is_none()
            && self.cgroup.is_none()
            && self.command.is_empty()
    }
}

/// Rows that say their process's cgroup.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CgroupColumnArgs {
    /// Show each row's cgroup v2 (a CGROUP column; a `cgroup` field in JSON)
    #[arg(long)]
    pub by_cgroup: bool,
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

/// How user stacks are walked, for the subcommands that take them.
#[derive(clap::Args, Clone, Debug)]
pub struct UnwindArgs {
    /// How user stacks are walked: cfi follows each binary's .eh_frame (callers of memset
    /// and of code built without frame pointers kept), fp the frame pointers alone
    #[arg(long, value_enum, value_name = "HOW", default_value = "cfi")]
    pub unwind: Unwind,
    /// Kernel memory for unwind tables, MiB (8 bytes a row; the C library takes about 250 KiB)
    #[arg(long, value_name = "MIB", default_value_t = UNWIND_MB, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub unwind_mb: u32,
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
    pub fn apply(&self, plan: &mut Plan) {
        if self.unwind == Unwind::Cfi && plan.flags & pfault_common::CFG_USTACK != 0 {
            plan.flags |= pfault_common::CFG_UNWIND_CFI;
            plan.unwind_rows = rows_for_mb(self.unwind_mb);
        }
    }
}

/// Filters every tracing subcommand applies in the kernel.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct FaultFilterArgs {
    /// Only faults raised in user mode
    #[arg(long, conflicts_with = "kernel_faults")]
    pub user_faults: bool,
    /// Only faults raised in kernel mode (copy_to_user and the like)
    #[arg(long)]
    pub kernel_faults: bool,
    /// Only these kinds of fault
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KIND")]
    pub kind: Vec<Kind>,
    /// Only faults that took at least this many microseconds
    #[arg(long, value_name = "US")]
    pub min_latency: Option<f64>,
    /// Probe mode (default: the best this kernel allows, see `pfault probes`)
    #[arg(long, value_enum)]
    pub probe: Option<ProbeMode>,
    /// Log the kernel side's rare events (a map that filled, a probe the kernel refused to
    /// nest) to stderr as they happen; costs nothing per fault when off
    #[arg(long)]
    pub bpf_log: bool,
}

impl FaultFilterArgs {
    /// A plan with these filters applied.
    pub fn plan(&self, flags: u32) -> Plan {
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
    pub fn kinds(&self) -> Vec<Kind> {
        if self.kind.is_empty() {
            Kind::ALL.to_vec()
        } else {
            self.kind.clone()
        }
    }

    /// `Config::modes`: user faults, kernel faults, or both.
    pub fn modes(&self) -> u32 {
        match (self.user_faults, self.kernel_faults) {
            (true, _) => MODE_USER,
            (_, true) => MODE_KERNEL,
            _ => MODE_USER | MODE_KERNEL,
        }
    }

    pub fn min_latency_ns(&self) -> u64 {
        self.min_latency.map(|us| (us * 1000.0) as u64).unwrap_or(0)
    }

    /// Whether a filter here must see each fault where it enters the handler: a latency needs
    /// its start, user/kernel its error code, and a named probe must be the one that sees it.
    /// Counting where faults complete, or from the kernel's own accounting, applies none of
    /// them. (Error faults, which never complete, are each tool's own question.)
    pub fn needs_fault_entry(&self) -> bool {
        self.min_latency.is_some() || self.user_faults || self.kernel_faults || self.probe.is_some()
    }
}

/// Where results go: stdout, or the file given with `--output`; `F` is the formats the tool
/// writes (stackcount's include pprof).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct OutputArgs<F: clap::ValueEnum + Clone + Default + Send + Sync + 'static = Format> {
    /// Output format
    #[arg(short = 'o', long = "format", value_enum, default_value_t)]
    pub format: F,
    /// Write results to FILE instead of stdout
    #[arg(long = "output", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// A size argument with the kernel's limit on it, checked before anything is loaded so the
/// error names the flag.
pub fn check_size(flag: &str, value: u32, min: u32, max: u32, unit: &str) -> Result<u32> {
    if value < min || value > max {
        bail!("{flag} {value}: must be between {min} and {max}{unit}");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_is_needed_only_by_filters_completion_cannot_apply() {
        let none = FaultFilterArgs::default();
        assert!(!none.needs_fault_entry());
        for f in [
            FaultFilterArgs {
                min_latency: Some(1.0),
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
