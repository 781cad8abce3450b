//! A command pfault starts itself, held before its first instruction until the probes are
//! attached and its pid is in the filter. std's `Command` waits for the exec, so it cannot
//! hold a child back: this forks and parks the child on a pipe.

use std::{
    ffi::CString,
    fs::File,
    io::{Read, Write},
    os::fd::FromRawFd,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

/// The byte that lets the child exec. Anything else, or the pipe closing because pfault
/// failed or died, makes it exit without running the command.
const GO: u8 = b'g';
/// The exit status of a held child that was never released.
const NOT_RELEASED: i32 = 126;

/// A forked child waiting to exec the user's command. Dropped unreleased (pfault failed
/// after forking it), it is killed and reaped: the command never runs untraced.
pub(crate) struct Held {
    pub(crate) pid: u32,
    /// The program it will exec, as found in PATH.
    pub(crate) program: PathBuf,
    release: Option<File>,
    /// Closes when the child's exec succeeds (close-on-exec), or carries its errno.
    exec_error: Option<File>,
    /// Reaped: its pid may be another process's now.
    reaped: std::cell::Cell<bool>,
}

/// Whether this user may execute `p` (access(2): permission bits, ACLs, a noexec mount).
fn executable(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
}

/// Whether the kernel would run the file at `p`: ELF, a `#!` script, or anything where
/// binfmt_misc has formats registered (those it cannot tell from here). Else exec fails
/// with ENOEXEC, as `-- ./script-without-shebang` does (a shell would run it with sh).
fn runnable_format(p: &Path) -> bool {
    let mut head = [0u8; 4];
    let n = File::open(p).and_then(|mut f| f.read(&mut head)).unwrap_or(0);
    if head[..n].starts_with(b"\x7fELF") || head[..n].starts_with(b"#!") {
        return true;
    }
    std::fs::read_dir("/proc/sys/fs/binfmt_misc").is_ok_and(|d| {
        d.flatten()
            .any(|e| !matches!(e.file_name().to_str(), Some("register" | "status")))
    })
}

/// Finds `prog` as execvp would and checks the kernel can run it, so a typo or a file that
/// cannot run is one clear line before anything is loaded, not a child exiting 127.
fn resolve_program(prog: &str) -> Result<PathBuf> {
    let path = if prog.contains('/') {
        PathBuf::from(prog)
    } else {
        let candidates: Vec<PathBuf> = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join(prog))
            .filter(|p| p.is_file())
            .collect();
        match candidates.iter().find(|p| executable(p)).or(candidates.first()) {
            Some(p) => p.clone(),
            None => bail!("cannot run {prog}: no such command in PATH (check the command after `--`)"),
        }
    };
    let shown = path.display();
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("cannot run {shown}: no such file (check the command after `--`)")
        }
        Err(e) => bail!("cannot run {shown}: {e}"),
        Ok(m) if m.is_dir() => bail!("cannot run {shown}: it is a directory"),
        Ok(_) if !executable(&path) => {
            bail!("cannot run {shown}: permission denied, it is not executable (chmod +x it, or name its interpreter: -- sh {shown})")
        }
        Ok(_) if !runnable_format(&path) => {
            bail!("cannot run {shown}: neither a binary nor a script with a #! line (add one, or name its interpreter: -- sh {shown})")
        }
        Ok(_) => Ok(path),
    }
}

impl Held {
    /// Forks `argv`, held until [`Held::release`].
    pub(crate) fn spawn(argv: &[String]) -> Result<Held> {
        let program = resolve_program(&argv[0])?;
        let prog = CString::new(program.clone().into_os_string().into_encoded_bytes())?;
        let args: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .context("an argument of the command holds a NUL byte")?;
        let mut argp: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argp.push(std::ptr::null());
        let mut fds = [0; 2];
        let mut errs = [0; 2];
        // SAFETY: each array has room for the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0
            || unsafe { libc::pipe2(errs.as_mut_ptr(), libc::O_CLOEXEC) } != 0
        {
            bail!("pipe: {}", std::io::Error::last_os_error());
        }
        let signals = crate::signals::inherited();
        // SAFETY: the child only makes async-signal-safe calls until it execs or exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            bail!("fork: {}", std::io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: async-signal-safe calls on descriptors and buffers this process owns.
            unsafe {
                // First, so a Ctrl-C while it is held acts on it as it would on the command.
                signals.restore_in_child();
                crate::procfs::restore_open_files_limit();
                libc::close(fds[1]);
                libc::close(errs[0]);
                let mut b = 0u8;
                let n = loop {
                    let n = libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
                    if n >= 0 || *libc::__errno_location() != libc::EINTR {
                        break n;
                    }
                };
                if n == 1 && b == GO {
                    libc::execv(prog.as_ptr(), argp.as_ptr());
                    let errno = *libc::__errno_location();
                    libc::write(errs[1], (&errno as *const i32).cast(), size_of::<i32>());
                    libc::_exit(127);
                }
                libc::_exit(NOT_RELEASED);
            }
        }
        // SAFETY: the ends named are the child's; the others are ours to own.
        unsafe {
            libc::close(fds[0]);
            libc::close(errs[1]);
        }
        Ok(Held {
            pid: pid as u32,
            program,
            release: Some(unsafe { File::from_raw_fd(fds[1]) }),
            exec_error: Some(unsafe { File::from_raw_fd(errs[0]) }),
            reaped: std::cell::Cell::new(false),
        })
    }

    /// Lets the command run, and waits for its exec: a failure is an error in words, not a
    /// silent exit status 127.
    pub(crate) fn release(&mut self) -> Result<()> {
        if let Some(mut pipe) = self.release.take() {
            pipe.write_all(&[GO]).context("releasing the command")?;
        }
        if let Some(mut errs) = self.exec_error.take() {
            let mut errno = [0u8; size_of::<i32>()];
            // End of file: the exec closed the pipe, the command runs.
            if errs.read_exact(&mut errno).is_ok() {
                let errno = i32::from_ne_bytes(errno);
                let e = std::io::Error::from_raw_os_error(errno);
                let shown = self.program.display();
                if errno == libc::ENOENT {
                    // The program was there a moment ago: what is missing is what runs it.
                    bail!("cannot run {shown}: its interpreter (its #! line's, or its ELF loader) is missing ({e})");
                }
                bail!("cannot run {shown}: {e}");
            }
        }
        Ok(())
    }

    /// Waits for the command; its exit status (128 + signal when killed), as shells report it.
    pub(crate) fn reap(&self) -> Option<i32> {
        let mut status = 0;
        // SAFETY: our own child; `status` is a valid out-pointer.
        if unsafe { libc::waitpid(self.pid as i32, &mut status, 0) } < 0 {
            return None;
        }
        self.reaped.set(true);
        Some(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        })
    }

    /// Kills the released command where it still runs: pfault failed mid-run (an output it
    /// cannot write), and the command would go on untraced, with no one to wait for it.
    pub(crate) fn kill(&self) {
        if self.release.is_none() && !self.reaped.get() {
            // SAFETY: our own child, not reaped, so the pid is still its.
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.release.is_some() {
            // SAFETY: our own child, still parked on the pipe.
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
            self.reap();
        }
    }
}
