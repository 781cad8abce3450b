//! SIGINT and SIGTERM from pfault's first instruction on, and the signal state a command
//! pfault starts gets back.
//!
//! Tokio's handlers exist only once the run loop starts; before that a signal either killed
//! pfault mid-start-up or, where pfault inherited SIGINT ignored (a shell's `cmd &`), was lost
//! and the command released anyway. A handler installed first thing only notes the signal;
//! start-up checks the note before it releases a command, and tokio's handlers, installed
//! later, chain to this one, so the note stays true to the end.

use std::{
    mem::MaybeUninit,
    sync::{
        atomic::{AtomicI32, Ordering},
        OnceLock,
    },
};

/// The signals that stop pfault.
const STOPPING: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// The last stopping signal received; 0 before any.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// What pfault inherited, before it changed anything: what a command it starts gets back.
static INHERITED: OnceLock<Inherited> = OnceLock::new();

/// Signal state to hand a command: the dispositions of the signals pfault handles itself,
/// and the signal mask.
#[derive(Clone, Copy)]
pub(crate) struct Inherited {
    stopping: [libc::sigaction; 2],
    mask: libc::sigset_t,
}

extern "C" fn note(sig: libc::c_int) {
    RECEIVED.store(sig, Ordering::Relaxed);
}

/// Pfault stopped by a signal before it was tracing anything.
#[derive(Debug)]
pub(crate) struct Interrupted(pub i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by signal {} during start-up", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Notes SIGINT and SIGTERM from now on, whatever pfault inherited: tokio's handlers override
/// an inherited "ignore" anyway once the run loop starts, and a signal must mean the same at
/// every moment. Call first thing in main, once.
pub(crate) fn catch() {
    let mut inherited = Inherited {
        // SAFETY: plain C structs, filled in by the calls below.
        stopping: unsafe { MaybeUninit::zeroed().assume_init() },
        mask: unsafe { MaybeUninit::zeroed().assume_init() },
    };
    // SAFETY: sigprocmask with no new set only reads the current mask into `mask`.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, std::ptr::null(), &mut inherited.mask) };
    for (sig, old) in STOPPING.iter().zip(&mut inherited.stopping) {
        // SAFETY: a zeroed sigaction with a handler that only stores to an atomic, which is
        // async-signal-safe; `old` receives what was there.
        unsafe {
            let mut act: libc::sigaction = MaybeUninit::zeroed().assume_init();
            act.sa_sigaction = note as extern "C" fn(libc::c_int) as libc::sighandler_t;
            act.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(*sig, &act, old);
        }
    }
    let _ = INHERITED.set(inherited);
}

/// Puts back what [`catch`] changed, for subcommands that trace nothing and so have nothing
/// to clean up: a signal ends them as it would any program. One noted meanwhile ends pfault now.
pub(crate) fn uncatch() {
    if let Some(inherited) = INHERITED.get() {
        for (sig, old) in STOPPING.iter().zip(&inherited.stopping) {
            // SAFETY: restores a disposition sigaction itself returned.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
    }
    if let Some(sig) = received() {
        die_of(sig);
    }
}

/// The stopping signal received so far, if any.
pub(crate) fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::Relaxed) {
        0 => None,
        sig => Some(sig),
    }
}

/// Fails with [`Interrupted`] once a stopping signal came: start-up calls this between its
/// steps and last before it lets a command run.
pub(crate) fn check() -> Result<(), Interrupted> {
    match received() {
        Some(sig) => Err(Interrupted(sig)),
        None => Ok(()),
    }
}

/// What pfault inherited, to hand to a command; the defaults if [`catch`] never ran.
pub(crate) fn inherited() -> Inherited {
    INHERITED.get().copied().unwrap_or_else(|| {
        // SAFETY: zeroed sigactions are SIG_DFL with no flags; sigemptyset fills the mask.
        unsafe {
            let mut i = Inherited {
                stopping: MaybeUninit::zeroed().assume_init(),
                mask: MaybeUninit::zeroed().assume_init(),
            };
            libc::sigemptyset(&mut i.mask);
            i
        }
    })
}

impl Inherited {
    /// In a forked child, before exec: the signal state pfault itself started with. SIGPIPE
    /// goes back to its default, as std's `Command` does, since Rust's runtime set it to
    /// "ignore" before main (which a command then inherits: `yes | head -1` complains of a
    /// broken pipe instead of dying quietly). Only async-signal-safe calls.
    pub(crate) fn restore_in_child(&self) {
        // SAFETY: sigaction, signal and sigprocmask are async-signal-safe; every pointer is
        // to memory this process owns.
        unsafe {
            for (sig, old) in STOPPING.iter().zip(&self.stopping) {
                libc::sigaction(*sig, old, std::ptr::null_mut());
            }
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::sigprocmask(libc::SIG_SETMASK, &self.mask, std::ptr::null_mut());
        }
    }
}

/// Ends pfault as `sig` would have, once it cleaned up: its parent sees it killed by the
/// signal (a shell's `$?` is 128 + the signal, and a script stops), the convention for a
/// program that catches SIGINT to tidy up, and what perf stat does.
pub(crate) fn die_of(sig: i32) -> ! {
    // SAFETY: back to the default action, unblocked, then raised: the process ends here.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = MaybeUninit::zeroed().assume_init();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    std::process::exit(128 + sig)
}
