//! Every program pfault attaches, as data: its name in the object, its hook, and which runs
//! need it. Which probes a run attaches is a pure function of the probe mode and the plan
//! ([`select`]), tested below without a kernel. A new probe is one row of [`PROBES`].

use pfault_common::*;

use super::plan::ProbeMode;

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hook {
    /// A raw tracepoint: the kernel's arguments as they are, without a trace record built
    /// first, and a detach that does not wait for a grace period.
    RawTracepoint(&'static str),
    /// A classic tracepoint (category, event): the kernel filters before any program runs,
    /// and its detach waits for a grace period (handed off: `linger`).
    Tracepoint(&'static str, &'static str),
    /// A perf software event on every online CPU, period 1: the kernel's fault accounting.
    Accounting(Accounted),
    KProbe(&'static str),
    KRetProbe(&'static str),
    FEntry(&'static str),
    FExit(&'static str),
    /// A BPF task iterator: loaded, then run on demand (`Engine::fold_threads`).
    TaskIter,
}

/// The perf software events that count completed faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Accounted {
    Minor,
    Major,
}

/// What the choice of probes depends on: the probe mode, and the plan's effective flags.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Choice {
    pub(crate) mode: ProbeMode,
    /// `CFG_*` bits, those the task filter adds included.
    pub(crate) flags: u32,
    /// Bit `1 << KIND_*` per kind wanted.
    pub(crate) kinds: u32,
    /// `MODE_USER | MODE_KERNEL`.
    pub(crate) modes: u32,
    /// Perf event programs can be attached with a cookie (not the compat object).
    pub(crate) cookies: bool,
}

impl Choice {
    fn has(&self, bits: u32) -> bool {
        self.flags & bits != 0
    }

    /// The perf events of completed faults: the tracepoint path's completion.
    fn accounting(&self) -> bool {
        self.mode == ProbeMode::Tracepoint && !self.has(CFG_ACCOUNTED)
    }

    /// Counting at completion alone, with no entry probe (tracepoint mode).
    fn completion_only(&self) -> bool {
        self.mode == ProbeMode::Tracepoint && self.has(CFG_COMPLETION_ONLY)
    }

    /// The exception tracepoints: the fault's entry on the tracepoint path; on the
    /// `handle_mm_fault` paths they catch only faults that never reach it (bad address, bad
    /// access), which matter when error faults are wanted.
    fn exception_entry(&self, mode: u32) -> bool {
        (self.mode == ProbeMode::Tracepoint || self.kinds & (1 << KIND_ERROR) != 0)
            && !self.completion_only()
            && self.modes & mode != 0
    }
}

/// One program and when it runs.
pub(crate) struct Probe {
    /// The program's name in the object.
    pub(crate) program: &'static str,
    pub(crate) hook: Hook,
    /// The `handle_mm_fault` hooks of a probe mode: attached first, while the mode is
    /// chosen, and a failure refuses the mode.
    pub(crate) mode_probe: Option<ProbeMode>,
    /// Whether a run needs it.
    pub(crate) wanted: fn(&Choice) -> bool,
    /// A probe the run can do without: where the kernel refuses it, this names what is lost
    /// and the run goes on.
    pub(crate) optional: Option<&'static str>,
}

pub(crate) const FOLD_THREADS: &str = "fold_threads";

/// Both completion events' program, told the kind by the cookie it is attached with.
pub(crate) const FAULT_DONE: &str = "fault_done";

/// Programs only the compat object has (one per completion event), and only the default one.
#[cfg(test)]
pub(crate) const COMPAT_ONLY: [&str; 2] = ["fault_minor", "fault_major"];
#[cfg(test)]
pub(crate) const DEFAULT_ONLY: [&str; 1] = [FAULT_DONE];

pub(crate) const PROBES: &[Probe] = &[
    // One program for both exceptions: verified once.
    Probe {
        program: "page_fault",
        hook: Hook::RawTracepoint("page_fault_user"),
        mode_probe: None,
        wanted: |c| c.exception_entry(MODE_USER),
        optional: None,
    },
    Probe {
        program: "page_fault",
        hook: Hook::RawTracepoint("page_fault_kernel"),
        mode_probe: None,
        wanted: |c| c.exception_entry(MODE_KERNEL),
        optional: None,
    },
    // One program for both completions, verified once; the compat object's kernels have no
    // cookies to tell it which, and get one program each.
    Probe {
        program: FAULT_DONE,
        hook: Hook::Accounting(Accounted::Minor),
        mode_probe: None,
        wanted: |c| c.accounting() && c.cookies,
        optional: None,
    },
    Probe {
        program: FAULT_DONE,
        hook: Hook::Accounting(Accounted::Major),
        mode_probe: None,
        wanted: |c| c.accounting() && c.cookies,
        optional: None,
    },
    Probe {
        program: "fault_minor",
        hook: Hook::Accounting(Accounted::Minor),
        mode_probe: None,
        wanted: |c| c.accounting() && !c.cookies,
        optional: None,
    },
    Probe {
        program: "fault_major",
        hook: Hook::Accounting(Accounted::Major),
        mode_probe: None,
        wanted: |c| c.accounting() && !c.cookies,
        optional: None,
    },
    Probe {
        program: "hmf_fentry",
        hook: Hook::FEntry("handle_mm_fault"),
        mode_probe: Some(ProbeMode::Fentry),
        wanted: |c| c.mode == ProbeMode::Fentry,
        optional: None,
    },
    Probe {
        program: "hmf_fexit",
        hook: Hook::FExit("handle_mm_fault"),
        mode_probe: Some(ProbeMode::Fentry),
        wanted: |c| c.mode == ProbeMode::Fentry,
        optional: None,
    },
    Probe {
        program: "hmf_kprobe",
        hook: Hook::KProbe("handle_mm_fault"),
        mode_probe: Some(ProbeMode::Kprobe),
        wanted: |c| c.mode == ProbeMode::Kprobe,
        optional: None,
    },
    Probe {
        program: "hmf_kretprobe",
        hook: Hook::KRetProbe("handle_mm_fault"),
        mode_probe: Some(ProbeMode::Kprobe),
        wanted: |c| c.mode == ProbeMode::Kprobe,
        optional: None,
    },
    // Reports the faults that killed threads, folds the counts of exiting ones, and ends a
    // process's unwinder cache.
    Probe {
        program: "task_exit",
        hook: Hook::RawTracepoint("sched_process_exit"),
        mode_probe: None,
        wanted: |c| !c.completion_only() || c.has(CFG_UNWIND_CFI),
        optional: None,
    },
    Probe {
        program: "task_fork",
        hook: Hook::RawTracepoint("sched_process_fork"),
        mode_probe: None,
        wanted: |c| c.has(CFG_FOLLOW | CFG_NOTIFY_TASKS),
        optional: None,
    },
    Probe {
        program: "task_exec",
        hook: Hook::RawTracepoint("sched_process_exec"),
        mode_probe: None,
        wanted: |c| c.has(CFG_NOTIFY_TASKS | CFG_UNWIND_CFI),
        optional: None,
    },
    // A kernel without syscall tracepoints still traces: the maps of processes that exit at
    // once are then read from /proc alone, and may come too late.
    Probe {
        program: "task_mmap",
        hook: Hook::Tracepoint("syscalls", "sys_exit_mmap"),
        mode_probe: None,
        wanted: |c| c.has(CFG_NOTIFY_MAPS),
        optional: Some("mmap notices"),
    },
    Probe {
        program: FOLD_THREADS,
        hook: Hook::TaskIter,
        mode_probe: None,
        wanted: |c| c.has(CFG_OUT_PROCS),
        optional: None,
    },
];

/// The probes a run in `choice.mode` attaches, the mode's own `handle_mm_fault` hooks first.
pub(crate) fn select(choice: &Choice) -> Vec<&'static Probe> {
    let mut chosen: Vec<&Probe> = PROBES.iter().filter(|p| (p.wanted)(choice)).collect();
    chosen.sort_by_key(|p| p.mode_probe.is_none());
    chosen
}

/// The `handle_mm_fault` hooks that make up `mode` (none for the tracepoint mode).
pub(crate) fn mode_probes(mode: ProbeMode) -> impl Iterator<Item = &'static Probe> {
    PROBES.iter().filter(move |p| p.mode_probe == Some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_KINDS: u32 = 1 << KIND_MINOR | 1 << KIND_MAJOR | 1 << KIND_ERROR;
    const BOTH: u32 = MODE_USER | MODE_KERNEL;

    /// The probes chosen (by the default object, whose completion programs take cookies):
    /// a shared program's by its event, the others by their program.
    fn names(mode: ProbeMode, flags: u32, kinds: u32, modes: u32) -> Vec<&'static str> {
        names_in(true, mode, flags, kinds, modes)
    }

    fn names_in(cookies: bool, mode: ProbeMode, flags: u32, kinds: u32, modes: u32) -> Vec<&'static str> {
        select(&Choice {
            mode,
            flags,
            kinds,
            modes,
            cookies,
        })
        .iter()
        .map(|p| match p.hook {
            Hook::RawTracepoint(event) if p.program == "page_fault" => event,
            Hook::Accounting(Accounted::Minor) if p.program == FAULT_DONE => "fault_minor",
            Hook::Accounting(Accounted::Major) if p.program == FAULT_DONE => "fault_major",
            _ => p.program,
        })
        .collect()
    }

    #[test]
    fn the_compat_object_has_a_completion_program_per_kind() {
        let flags = CFG_OUT_EVENTS | CFG_MAPPING;
        let both = |cookies| {
            select(&Choice {
                mode: ProbeMode::Tracepoint,
                flags,
                kinds: ALL_KINDS,
                modes: BOTH,
                cookies,
            })
            .iter()
            .filter(|p| matches!(p.hook, Hook::Accounting(_)))
            .map(|p| p.program)
            .collect::<Vec<_>>()
        };
        assert_eq!(both(true), [FAULT_DONE, FAULT_DONE]);
        assert_eq!(both(false), ["fault_minor", "fault_major"]);
        assert_eq!(
            names_in(false, ProbeMode::Tracepoint, flags, ALL_KINDS, BOTH),
            names(ProbeMode::Tracepoint, flags, ALL_KINDS, BOTH)
        );
    }

    #[test]
    fn trace_attaches_entry_completion_and_notices_in_every_mode() {
        let flags = CFG_OUT_EVENTS | CFG_MAPPING | CFG_NOTIFY_TASKS | CFG_NOTIFY_MAPS;
        let notices = ["task_exit", "task_fork", "task_exec", "task_mmap"];
        let tp = names(ProbeMode::Tracepoint, flags, ALL_KINDS, BOTH);
        let expected: Vec<&str> = [
            "page_fault_user",
            "page_fault_kernel",
            "fault_minor",
            "fault_major",
        ]
        .into_iter()
        .chain(notices)
        .collect();
        assert_eq!(tp, expected);
        for (mode, pair) in [
            (ProbeMode::Fentry, ["hmf_fentry", "hmf_fexit"]),
            (ProbeMode::Kprobe, ["hmf_kprobe", "hmf_kretprobe"]),
        ] {
            // Error faults that never reach handle_mm_fault still come from the exceptions.
            let expected: Vec<&str> = pair
                .into_iter()
                .chain(["page_fault_user", "page_fault_kernel"])
                .chain(notices)
                .collect();
            assert_eq!(names(mode, flags, ALL_KINDS, BOTH), expected, "{mode:?}");
            let no_errors = 1 << KIND_MINOR | 1 << KIND_MAJOR;
            let expected: Vec<&str> = pair.into_iter().chain(notices).collect();
            assert_eq!(
                names(mode, flags, no_errors, BOTH),
                expected,
                "{mode:?} without errors"
            );
        }
    }

    #[test]
    fn stackcount_counts_at_completion_alone_on_the_tracepoint_path() {
        let flags = CFG_OUT_STACKS | CFG_USTACK | CFG_COMPLETION_ONLY | CFG_NOTIFY_TASKS | CFG_NOTIFY_MAPS;
        let kinds = 1 << KIND_MINOR | 1 << KIND_MAJOR;
        assert_eq!(
            names(ProbeMode::Tracepoint, flags, kinds, BOTH),
            [
                "fault_minor",
                "fault_major",
                "task_fork",
                "task_exec",
                "task_mmap"
            ]
        );
        // The CFI unwinder needs exec and exit to keep its per-process caches right.
        assert_eq!(
            names(ProbeMode::Tracepoint, flags | CFG_UNWIND_CFI, kinds, BOTH),
            [
                "fault_minor",
                "fault_major",
                "task_exit",
                "task_fork",
                "task_exec",
                "task_mmap"
            ]
        );
    }

    #[test]
    fn stat_from_the_kernels_accounting_attaches_no_completion() {
        let flags = CFG_OUT_PROCS | CFG_ACCOUNTED;
        assert_eq!(
            names(ProbeMode::Tracepoint, flags, ALL_KINDS, BOTH),
            ["page_fault_user", "page_fault_kernel", "task_exit", FOLD_THREADS]
        );
        // --user-faults: the kernel-mode exception is not watched.
        assert_eq!(
            names(ProbeMode::Tracepoint, flags, ALL_KINDS, MODE_USER),
            ["page_fault_user", "task_exit", FOLD_THREADS]
        );
    }

    #[test]
    fn a_command_followed_adds_fork_alone() {
        let flags = CFG_OUT_PROCS | CFG_FOLLOW;
        assert_eq!(
            names(ProbeMode::Fentry, flags, 1 << KIND_MINOR, BOTH),
            ["hmf_fentry", "hmf_fexit", "task_exit", "task_fork", FOLD_THREADS]
        );
    }

    #[test]
    fn every_mode_but_tracepoint_has_its_handle_mm_fault_pair() {
        for mode in ProbeMode::ALL {
            let n = mode_probes(mode).count();
            assert_eq!(n, if mode == ProbeMode::Tracepoint { 0 } else { 2 }, "{mode:?}");
        }
    }
}
