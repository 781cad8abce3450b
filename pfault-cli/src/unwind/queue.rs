//! The table loader's work list. Requests are served in the order the kernel side made them,
//! but for those that stacks held in userspace wait on ([`super::late`]): host-wide, every
//! program the host starts asks for its tables, and a storm of faults in a library just
//! loaded would otherwise wait behind all of them, each of its faults copying 8 KiB of stack
//! until the ring buffer has no room and its stacks are left as the kernel side guessed them.
//! A second thread serves only the wanted requests of code up to [`QUICK_CODE`], so one waits
//! neither behind the queue nor behind a build in progress (a 900,000-row libLLVM takes
//! 130 ms, and a process running it at start-up wants it too).

use std::{
    collections::VecDeque,
    sync::{mpsc, Condvar, Mutex},
};

use pfault_common::{FileId, UnwindNeed};

pub(super) enum Job {
    Need(UnwindNeed),
    /// Answered once every job before it is done.
    Sync(mpsc::Sender<()>),
}

/// A code mapping held stacks wait on: its process and start, as the kernel side's request
/// names it, and its file as /proc/PID/maps names it (the same where no overlay or btrfs
/// subvolume is in between).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub(crate) pid: u32,
    pub(crate) start: u64,
    pub(crate) file: FileId,
}

impl Wanted {
    fn asked_by(&self, need: &UnwindNeed) -> bool {
        need.pid == self.pid && need.vm_start == self.start || need.file == self.file
    }
}

/// The most code (bytes of the mapping a request names) the second thread builds a table of:
/// the C library's is 1.3 MiB, libLLVM-14's 97 MiB.
const QUICK_CODE: u64 = 16 << 20;

/// At most this many mappings are wanted at once; a newer one pushes out the oldest (whose
/// stacks are walked with tables built from their files, past `LATE_HELD`).
const WANTED: usize = 64;

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Latest first: a storm keeps its mapping at the front.
    wanted: VecDeque<Wanted>,
    /// Wanted jobs being served by the second thread.
    hurrying: usize,
    closed: bool,
}

#[derive(Default)]
pub(super) struct Queue {
    state: Mutex<State>,
    changed: Condvar,
}

impl Queue {
    pub(super) fn push(&self, job: Job) {
        self.state.lock().unwrap().jobs.push_back(job);
        self.changed.notify_all();
    }

    /// Serves `w`'s request (when it is queued) ahead of the others.
    pub(super) fn want(&self, w: Wanted) {
        let mut s = self.state.lock().unwrap();
        if s.wanted.front() == Some(&w) {
            return;
        }
        s.wanted.retain(|x| *x != w);
        s.wanted.push_front(w);
        s.wanted.truncate(WANTED);
        drop(s);
        self.changed.notify_all();
    }

    /// Ends both threads once they are done with the job in hand.
    pub(super) fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.changed.notify_all();
    }

    /// The next job in order, a wanted one first; `None` once closed. A `Sync` is handed out
    /// only after the wanted jobs taken before it are done.
    pub(super) fn next(&self) -> Option<Job> {
        let mut s = self.state.lock().unwrap();
        loop {
            if s.closed {
                return None;
            }
            if let Some(need) = take_wanted(&mut s, u64::MAX) {
                return Some(Job::Need(need));
            }
            match s.jobs.front() {
                Some(Job::Sync(_)) if s.hurrying > 0 => {}
                Some(_) => return s.jobs.pop_front(),
                None => {}
            }
            s = self.changed.wait(s).unwrap();
        }
    }

    /// The next wanted job of code up to [`QUICK_CODE`], for the second thread (which says
    /// [`Queue::hurried`] when done with it); `None` once closed.
    pub(super) fn next_wanted(&self) -> Option<UnwindNeed> {
        let mut s = self.state.lock().unwrap();
        loop {
            if s.closed {
                return None;
            }
            if let Some(need) = take_wanted(&mut s, QUICK_CODE) {
                s.hurrying += 1;
                return Some(need);
            }
            s = self.changed.wait(s).unwrap();
        }
    }

    pub(super) fn hurried(&self) {
        self.state.lock().unwrap().hurrying -= 1;
        self.changed.notify_all();
    }
}

/// The queued request of the mapping wanted latest (of code up to `code` bytes), taken out of
/// the queue with its want.
fn take_wanted(s: &mut State, code: u64) -> Option<UnwindNeed> {
    let (wi, ji) = s.wanted.iter().enumerate().find_map(|(wi, w)| {
        let ji = s
            .jobs
            .iter()
            .position(|j| matches!(j, Job::Need(n) if w.asked_by(n) && n.vm_end - n.vm_start <= code))?;
        Some((wi, ji))
    })?;
    s.wanted.remove(wi);
    match s.jobs.remove(ji) {
        Some(Job::Need(n)) => Some(n),
        _ => unreachable!("position found a Need"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn need(pid: u32, start: u64, ino: u64) -> UnwindNeed {
        UnwindNeed {
            rec: pfault_common::REC_UNWIND,
            pid,
            vm_start: start,
            vm_end: start + 0x1000,
            file: FileId { ino, dev: 1, _pad: 0 },
        }
    }

    fn pid_of(job: Option<Job>) -> u32 {
        match job {
            Some(Job::Need(n)) => n.pid,
            _ => panic!("not a need"),
        }
    }

    #[test]
    fn a_wanted_request_is_served_first_and_the_rest_in_order() {
        let q = Queue::default();
        for pid in 1..=4 {
            q.push(Job::Need(need(pid, 0x1000 * pid as u64, pid as u64)));
        }
        // Wanted by its mapping, then by its file (another name of the mapping's start).
        q.want(Wanted {
            pid: 3,
            start: 0x3000,
            file: FileId::default(),
        });
        q.want(Wanted {
            pid: 9,
            start: 0,
            file: need(4, 0, 4).file,
        });
        assert_eq!(pid_of(q.next()), 4);
        assert_eq!(pid_of(q.next()), 3);
        assert_eq!(pid_of(q.next()), 1);
        assert_eq!(pid_of(q.next()), 2);
    }

    #[test]
    fn the_second_thread_leaves_big_code_to_the_first() {
        let q = Queue::default();
        let mut big = need(1, 0x1000, 1);
        big.vm_end = big.vm_start + QUICK_CODE + 4096;
        q.push(Job::Need(big));
        q.push(Job::Need(need(2, 0x2000, 2)));
        for (pid, start) in [(1, 0x1000), (2, 0x2000)] {
            q.want(Wanted {
                pid,
                start,
                file: FileId::default(),
            });
        }
        assert_eq!(q.next_wanted().map(|n| n.pid), Some(2));
        q.hurried();
        assert_eq!(pid_of(q.next()), 1);
    }

    #[test]
    fn a_sync_waits_for_the_wanted_jobs_in_hand() {
        let q = std::sync::Arc::new(Queue::default());
        q.push(Job::Need(need(1, 0x1000, 1)));
        let (tx, rx) = mpsc::channel();
        q.push(Job::Sync(tx));
        q.want(Wanted {
            pid: 1,
            start: 0x1000,
            file: FileId::default(),
        });
        assert_eq!(q.next_wanted().map(|n| n.pid), Some(1));
        let main = {
            let q = q.clone();
            std::thread::spawn(move || match q.next() {
                Some(Job::Sync(done)) => done.send(()).unwrap(),
                _ => panic!("not the sync"),
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            rx.try_recv().is_err(),
            "answered while the wanted job was in hand"
        );
        q.hurried();
        main.join().unwrap();
        rx.recv().unwrap();
    }
}
