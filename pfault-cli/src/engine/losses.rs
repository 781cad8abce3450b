//! What the kernel side could not record, and how to say it: each loss with the flag that
//! would avoid it, where the tool has that flag.

use serde::Serialize;

use super::{
    objects::maps,
    plan::{Plan, Tunable},
};

/// Everything the kernel could not record, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Losses {
    /// Records a full ring buffer refused.
    pub(crate) ringbuf: u64,
    /// Faults not tracked: no per-thread storage (out of memory, or a nested probe).
    pub(crate) untracked: u64,
    /// Faults whose new stack's frames the ring buffer had no room for.
    pub(crate) stacks_lost: u64,
    /// Counts dropped because a count map was full.
    pub(crate) map_full: u64,
    /// Mappings unknown because the mmap lock was contended.
    pub(crate) vma_busy: u64,
}

impl Losses {
    /// `, N what (raise --flag)` for each loss besides the ring buffer's ("" when none). The
    /// advice names a flag only where `plan`'s tool has it.
    pub(crate) fn others(&self, plan: &Plan) -> String {
        let advice = |maps: &[&str]| {
            maps.iter()
                .find_map(|m| plan.flag_for(m))
                .map(|flag| format!(" (raise {flag})"))
                .unwrap_or_default()
        };
        [
            (
                self.untracked,
                "faults not tracked (the kernel gave no per-thread storage: out of memory, or a nested probe)".to_string(),
            ),
            (
                self.stacks_lost,
                format!(
                    "faults whose new stack did not fit in the ring buffer{}",
                    advice(&[maps::EVENTS])
                ),
            ),
            (
                self.map_full,
                format!(
                    "counts dropped because a count map was full{}",
                    advice(&[maps::STACK_COUNTS, maps::FILE_COUNTS, maps::PROC_STATS])
                ),
            ),
            (self.vma_busy, "mappings unknown (mmap lock contended)".to_string()),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!(", {n} {what}"))
        .collect()
    }

    /// `N lost (ring buffer full, raise --flag)`, the advice only where something was lost
    /// and `plan`'s tool has the flag; `what` names what the ring buffer carried ("" after a
    /// count of it).
    pub(crate) fn ring(&self, plan: &Plan, what: &str) -> String {
        let advice = plan
            .flag_for(maps::EVENTS)
            .filter(|_| self.ringbuf > 0)
            .map(|f| format!(", raise {f}"))
            .unwrap_or_default();
        let what = if what.is_empty() {
            String::new()
        } else {
            format!(" {what}")
        };
        format!("{}{what} lost (ring buffer full{advice})", self.ringbuf)
    }

    /// The line a tool ends with when anything was lost, the ring buffer's part only when it
    /// lost something; `ring_what` names what it carried. `None` when nothing was lost.
    pub(crate) fn line(&self, plan: &Plan, ring_what: &str) -> Option<String> {
        let others = self.others(plan);
        match (self.ringbuf > 0, others.strip_prefix(", ")) {
            (true, _) => Some(format!("{}{others}", self.ring(plan, ring_what))),
            (false, Some(others)) => Some(others.to_string()),
            (false, None) => None,
        }
    }
}

impl Tunable {
    pub(crate) const RINGBUF: Tunable = Tunable {
        map: maps::EVENTS,
        flag: "--ringbuf-mb",
    };
    pub(crate) const STACK_COUNTS: Tunable = Tunable {
        map: maps::STACK_COUNTS,
        flag: "--map-entries",
    };
    pub(crate) const FILE_COUNTS: Tunable = Tunable {
        map: maps::FILE_COUNTS,
        flag: "--map-entries",
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_names_only_flags_the_tool_has() {
        let lost = Losses {
            map_full: 3,
            stacks_lost: 2,
            ..Default::default()
        };
        let bare = Plan::new(0);
        let text = lost.others(&bare);
        assert!(!text.contains("raise"), "{text}");
        let mut stackcount = Plan::new(0);
        stackcount.tunables = vec![Tunable::STACK_COUNTS];
        let text = lost.others(&stackcount);
        assert!(
            text.contains("2 faults whose new stack did not fit in the ring buffer,"),
            "{text}"
        );
        assert!(text.contains("full (raise --map-entries)"), "{text}");
        assert_eq!(Losses::default().line(&stackcount, "notices"), None);
        // Nothing lost to the ring buffer: the line does not say "0 lost".
        let line = lost.line(&stackcount, "notices").unwrap();
        assert!(line.starts_with("2 faults whose new stack"), "{line}");
        let mut trace = Plan::new(0);
        trace.tunables = vec![Tunable::RINGBUF];
        let full = Losses {
            ringbuf: 7,
            ..Default::default()
        };
        assert_eq!(
            full.line(&trace, "events").unwrap(),
            "7 events lost (ring buffer full, raise --ringbuf-mb)"
        );
        assert_eq!(
            full.ring(&trace, ""),
            "7 lost (ring buffer full, raise --ringbuf-mb)"
        );
        // Nothing lost: no advice.
        assert_eq!(Losses::default().ring(&trace, ""), "0 lost (ring buffer full)");
    }
}
