//! A classic tracepoint's detach, off pfault's exit path. When the last perf user of a
//! classic event goes, the kernel waits for an RCU grace period before it frees the event's
//! buffers (`perf_trace_event_unreg`: about 65 ms measured); raw tracepoints, perf software
//! events and fentry do not wait. pfault's one classic event (mmap notices, the cheapest hook
//! on an unrelated system call) is handed, as the engine goes, to a process of pfault's own
//! that holds the last reference until pfault has closed its own, then takes the wait.

use std::{
    collections::HashSet,
    os::fd::{FromRawFd, OwnedFd, RawFd},
};

/// The descriptors this process has open.
pub(crate) fn open_fds() -> HashSet<RawFd> {
    std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The descriptors of the classic tracepoints attached, to hand off at the engine's end.
#[derive(Default)]
pub(crate) struct Linger {
    held: Vec<RawFd>,
    /// The write end of the pipe the holder waits on: closed after the engine's own
    /// descriptors (the engine's last field).
    release: Option<OwnedFd>,
}

impl Linger {
    /// Notes what an attach opened: the perf event and BPF link descriptors open now that
    /// were not `before` (the unwinder's thread may open files meanwhile: those are not the
    /// holder's to keep).
    pub(crate) fn note_since(&mut self, before: &HashSet<RawFd>) {
        let attached = |fd: &RawFd| {
            std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok_and(|l| {
                l.to_str()
                    .is_some_and(|l| l == "anon_inode:[perf_event]" || l == "anon_inode:bpf_link")
            })
        };
        self.held
            .extend(open_fds().difference(before).filter(|fd| attached(fd)));
    }

    /// Starts the holder: a grandchild (reparented at once, so nothing waits for it) with a
    /// copy of the held descriptors and nothing else of pfault's, which waits for the pipe to
    /// close, then closes them. Where it cannot start, pfault waits as before.
    pub(crate) fn hand_off(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut ends = [0; 2];
        // SAFETY: pipe2 fills the two descriptors it returns.
        if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return;
        }
        let (read_end, write_end) = (ends[0], ends[1]);
        let keep: Vec<RawFd> = self.held.iter().copied().chain([read_end]).collect();
        // Worked out before the fork: the children allocate nothing (another thread may hold
        // the allocator's lock as the process forks).
        let close: Vec<RawFd> = open_fds().into_iter().filter(|fd| !keep.contains(fd)).collect();
        // SAFETY: the children call only async-signal-safe functions (fork, close, read,
        // _exit) on memory set up before the fork.
        unsafe {
            match libc::fork() {
                0 => {
                    if libc::fork() == 0 {
                        for &fd in &close {
                            libc::close(fd);
                        }
                        let mut byte = 0u8;
                        while libc::read(read_end, &mut byte as *mut u8 as *mut libc::c_void, 1) > 0 {}
                        for &fd in &keep {
                            libc::close(fd);
                        }
                    }
                    libc::_exit(0);
                }
                -1 => {
                    libc::close(read_end);
                    libc::close(write_end);
                }
                child => {
                    libc::close(read_end);
                    libc::waitpid(child, std::ptr::null_mut(), 0);
                    self.release = Some(OwnedFd::from_raw_fd(write_end));
                }
            }
        }
    }
}
