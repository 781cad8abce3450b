//! A command pfault starts itself, held before its first instruction until the probes are
//! attached and its pid is in the filter. std's `Command` waits for the exec, so it cannot
//! hold a child back: this forks and parks the child on a pipe.

use std::{
    ffi::CString,
    fs::File,
    io::Write,
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
pub struct Held {
    pub pid: u32,
    /// The program it will exec, as found in PATH.
    pub program: PathBuf,
    release: Option<File>,
}

/// Finds `prog` as execvp would, so a typo is one clear error and not a child exiting 127.
fn resolve_program(prog: &str) -> Result<PathBuf> {
    let is_exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
            .unwrap_or(false)
    };
    if prog.contains('/') {
        if is_exec(Path::new(prog)) {
            return Ok(prog.into());
        }
    } else if let Some(found) = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(prog))
        .find(|p| is_exec(p))
    {
        return Ok(found);
    }
    bail!("cannot run {prog}: no such executable (check the command after `--`)");
}

impl Held {
    /// Forks `argv`, held until [`Held::release`].
    pub fn spawn(argv: &[String]) -> Result<Held> {
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
        // SAFETY: `fds` has room for the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
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
                libc::close(fds[1]);
                let mut b = 0u8;
                let n = loop {
                    let n = libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
                    if n >= 0 || *libc::__errno_location() != libc::EINTR {
                        break n;
                    }
                };
                if n == 1 && b == GO {
                    libc::execv(prog.as_ptr(), argp.as_ptr());
                    libc::_exit(127);
                }
                libc::_exit(NOT_RELEASED);
            }
        }
        // SAFETY: the read end is the child's; the write end is ours to own.
        unsafe { libc::close(fds[0]) };
        Ok(Held {
            pid: pid as u32,
            program,
            release: Some(unsafe { File::from_raw_fd(fds[1]) }),
        })
    }

    /// Lets the command run.
    pub fn release(&mut self) -> Result<()> {
        if let Some(mut pipe) = self.release.take() {
            pipe.write_all(&[GO]).context("releasing the command")?;
        }
        Ok(())
    }

    /// Waits for the command; its exit status (128 + signal when killed), as shells report it.
    pub fn reap(&self) -> Option<i32> {
        let mut status = 0;
        // SAFETY: our own child; `status` is a valid out-pointer.
        if unsafe { libc::waitpid(self.pid as i32, &mut status, 0) } < 0 {
            return None;
        }
        Some(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        })
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
