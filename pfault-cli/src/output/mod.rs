//! Output formats and where output goes. One module per format; subcommands render their
//! own rows and hand them to these writers.

pub(crate) mod columns;
pub(crate) mod escape;
pub(crate) mod flamegraph;
pub(crate) mod folded;
pub(crate) mod hist;
pub(crate) mod json;
pub(crate) mod lines;
pub(crate) mod pprof;
pub(crate) mod prometheus;
pub(crate) mod table;

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::Serialize;

pub(crate) use escape::escape;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns for people
    #[default]
    Text,
    /// JSON Lines: one object per line
    Json,
}

/// A file a flag names, opened before anything runs, so an unwritable path is one clear
/// error up front and not a failure after the traced command has run; but emptied only by
/// [`Reserved::take`], once start-up succeeded: a start that fails leaves what the file held
/// (and no file where there was none).
pub(crate) struct Reserved {
    pub(crate) path: PathBuf,
    file: Option<File>,
    /// pfault made it, so a failed start removes it.
    created: bool,
}

impl Reserved {
    /// `flag` names the option that chose the path, for the error.
    pub(crate) fn open(path: &Path, flag: &str) -> Result<Reserved> {
        let opened = match OpenOptions::new().write(true).create_new(true).open(path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                OpenOptions::new().write(true).open(path).map(|f| (f, false))
            }
            r => r.map(|f| (f, true)),
        };
        let (file, created) = opened
            .with_context(|| format!("cannot write {}: choose a writable {flag} path", path.display()))?;
        Ok(Reserved {
            path: path.to_path_buf(),
            file: Some(file),
            created,
        })
    }

    /// The file, emptied now (as File::create would have), to write.
    pub(crate) fn take(mut self) -> Result<File> {
        let file = self.file.take().expect("taken once");
        // A pipe or a device (`--output /dev/stdout`) has nothing to empty.
        if file.metadata().is_ok_and(|m| m.is_file()) {
            file.set_len(0)
                .with_context(|| format!("cannot write {}", self.path.display()))?;
        }
        Ok(file)
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if self.created && self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where a tool's output will go, chosen before start-up; [`Destination::open`] once it
/// succeeded.
pub(crate) struct Destination(Option<Reserved>);

impl Destination {
    /// `--output FILE`, or stdout.
    pub(crate) fn reserve(file: Option<&Path>) -> Result<Destination> {
        Ok(Destination(
            file.map(|p| Reserved::open(p, "--output")).transpose()?,
        ))
    }

    /// Output leaves in whole lines; on stdout, which a traced command may share, in pieces
    /// a pipe keeps whole (`--output FILE` keeps the two streams apart altogether).
    pub(crate) fn open(self) -> Result<Box<dyn Write>> {
        Ok(Box::new(match self.0 {
            Some(file) => {
                let path = file.path.clone();
                let file = Named {
                    file: file.take()?,
                    path,
                };
                lines::Lines::new(Box::new(file), false)
            }
            None => lines::Lines::new(Box::new(io::stdout()), true),
        }))
    }
}

/// A file whose write errors name it: "No space left on device" alone, mid-run, does not
/// say which of pfault's outputs failed.
struct Named {
    file: File,
    path: PathBuf,
}

impl Named {
    fn name(&self, e: io::Error) -> io::Error {
        // The kind stays: a closed pipe is still told apart.
        io::Error::new(e.kind(), format!("writing {}: {e}", self.path.display()))
    }
}

impl Write for Named {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.file.write(data).map_err(|e| self.name(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush().map_err(|e| self.name(e))
    }
}

/// Wall-clock time as `HH:MM:SS`, for interval headers.
pub(crate) fn clock() -> String {
    // SAFETY: time(NULL) and localtime_r into a zeroed tm are always valid.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&now, &mut tm) };
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// One round of a counting tool's rows: JSON Lines, or a table that `table` builds, under the
/// time when more rounds follow (`-i`).
pub(crate) fn write_rows<T: Serialize>(
    out: &mut dyn Write,
    format: Format,
    last: bool,
    rows: &[T],
    table: impl FnOnce(&[T]) -> table::Table,
) -> Result<()> {
    match format {
        Format::Json => rows.iter().try_for_each(|r| json::write_line(out, r)),
        Format::Text => {
            if !last {
                writeln!(out, "[{}]", clock())?;
            }
            table(rows).write(out)
        }
    }
}
