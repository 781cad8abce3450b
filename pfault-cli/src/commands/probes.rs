//! `pfault probes`: what this kernel allows and which probe mode the tools will use.

use anyhow::Result;
use pfault_common::CFG_OUT_PROCS;

use crate::{
    btf::Btf,
    engine::{
        features::{self, Tracefs},
        layout::{kernel_layout, DirectMap},
        plan, short_error, Engine, Plan, ProbeMode, TaskFilter,
    },
    output::table::bytes,
    procfs,
};

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// The report's lines: what was checked and what was found. Loads and attaches nothing for
/// longer than it takes to ask.
pub(crate) fn report() -> Vec<(String, String)> {
    let mut lines = Vec::new();
    let mut add = |k: &str, v: String| lines.push((k.to_string(), v));
    let uname = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    add("kernel", uname.trim().to_string());
    let privileged = procfs::check_privileges();
    add(
        "privileges",
        match &privileged {
            Ok(()) => "ok (CAP_BPF and CAP_PERFMON, or root)".into(),
            Err(e) => format!("missing: {e}"),
        },
    );
    let btf = Btf::from_sys_fs();
    add(
        "BTF",
        match &btf {
            Ok(_) => "yes (/sys/kernel/btf/vmlinux)".into(),
            Err(e) => format!("no: {}", short_error(e)),
        },
    );
    // Mounted as the tools would mount it, where pfault may.
    let tracefs = if privileged.is_ok() {
        features::ensure_tracefs()
    } else {
        Ok(())
    };
    let state = features::tracefs();
    add(
        "tracefs",
        match (tracefs, state) {
            (Err(e), _) => format!("no: {e}"),
            (Ok(()), Tracefs::Readable) => format!("mounted at {}", features::TRACEFS),
            (Ok(()), Tracefs::RootOnly) => format!(
                "mounted at {} (readable by root alone: run pfault probes as root for what it holds)",
                features::TRACEFS
            ),
            (Ok(()), Tracefs::NotMounted) => "not mounted (needs root to mount)".into(),
        },
    );
    // What only tracefs tells, where this user may not look in it.
    let unseen = || "unknown (tracefs is readable by root alone)".to_string();
    let root_only = state == Tracefs::RootOnly;
    if let Ok(btf) = &btf {
        add(
            "kernel layout",
            match kernel_layout(btf) {
                Ok(_) => "all struct offsets and VM_FAULT_* values found in BTF".into(),
                Err(e) => format!("incomplete: {e:#}"),
            },
        );
        // The optional helpers: each one missing is done another way (the compat programs).
        let missing = features::missing_helpers(btf).unwrap_or_else(|_| features::HELPERS.iter().collect());
        for h in &features::HELPERS {
            let here = !missing.iter().any(|m| m.name == h.name);
            add(
                h.what,
                if here {
                    "yes".into()
                } else {
                    format!("no: {}", h.without)
                },
            );
        }
    }
    add(
        "exceptions tracepoints",
        if root_only {
            unseen()
        } else {
            yes_no(features::exception_tracepoints())
        },
    );
    add(
        "kprobes",
        if root_only {
            unseen()
        } else if features::kprobes_available() {
            "yes".into()
        } else {
            "no (CONFIG_KPROBES not set, or tracefs not mounted)".into()
        },
    );
    add(
        "ring buffer",
        match features::ringbuf() {
            Ok(b) => yes_no(b),
            Err(e) => format!("unknown ({e})"),
        },
    );
    add(
        "mmap notices",
        if root_only {
            unseen()
        } else if std::path::Path::new(features::TRACEFS)
            .join("events/syscalls/sys_exit_mmap")
            .exists()
        {
            "yes (syscalls:sys_exit_mmap: short-lived processes' libraries are named)".into()
        } else {
            "no (no syscall tracepoint: maps come from /proc alone)".into()
        },
    );
    let memory = plan::stack_map_memory();
    let total: u64 = memory.iter().map(|(_, b)| b).sum();
    add(
        "stackcount maps",
        format!(
            "at most {} with default sizes ({}; STACK_COUNTS grows as stacks are counted)",
            bytes(total),
            memory
                .iter()
                .map(|(m, b)| format!("{m} {}", bytes(*b)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    add(
        "page sizes",
        match DirectMap::of_running_kernel() {
            Ok(d) if d.base_at != 0 => {
                "read from the page tables (page_offset_base in /proc/kallsyms)".into()
            }
            Ok(_) => "read from the page tables (direct map not randomized)".into(),
            Err(why) => format!("unknown: {why}"),
        },
    );
    add(
        "lockdown",
        match features::lockdown() {
            Ok(mode) => mode,
            Err(e) => format!("unknown: {e:#}"),
        },
    );
    if privileged.is_ok() && btf.is_ok() {
        // Load for real: fentry permission is a policy question only the kernel answers.
        let mut plan = Plan::new(CFG_OUT_PROCS);
        let filter = TaskFilter {
            tgid: u32::MAX,
            ..Default::default()
        };
        let mut best = None;
        for mode in ProbeMode::ALL {
            plan.probe = Some(mode);
            let verdict = match Engine::start(&plan, &filter) {
                Ok(_) => {
                    best.get_or_insert(mode);
                    "available".to_string()
                }
                Err(e) => format!("unavailable: {}", short_error(&e)),
            };
            add(&format!("mode {}", mode.name()), verdict);
        }
        // The user-stack walk stackcount and trace -U take by default.
        let mut stacks = crate::stacks::plan(
            true,
            false,
            &Default::default(),
            1024,
            &[crate::stacks::Weight::Faults],
        );
        stacks.probe = best;
        crate::args::UnwindArgs::default().apply(&mut stacks);
        let rows = stacks.unwind_rows as u64 * size_of::<pfault_common::UnwindRow>() as u64;
        add(
            "user stacks",
            match Engine::start(&stacks, &filter) {
                Ok(e) if e.unwinder.is_some() => format!(
                    "cfi: unwound from each binary's .eh_frame, {} of rows (--unwind-mb); --unwind fp for frame pointers alone",
                    bytes(rows)
                ),
                Ok(_) => "fp: frame pointers only (this kernel refuses the CFI unwinder)".into(),
                Err(e) => format!("unavailable: {}", short_error(&e)),
            },
        );
        add(
            "tools",
            match best {
                Some(m) => format!(
                    "trace, stackcount, ffaults, stat, top and exporter use {} (the first available of fentry, kprobe, tracepoint; --probe overrides)",
                    m.name()
                ),
                None => "no probe mode works on this kernel".into(),
            },
        );
    }
    lines
}

pub(crate) fn run() -> Result<Option<i32>> {
    let lines = report();
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &lines {
        println!("{k:<width$}  {v}");
    }
    Ok(None)
}
