//! Output formats and where output goes. One module per format; subcommands render their
//! own rows and hand them to these writers.

pub mod columns;
pub mod escape;
pub mod flamegraph;
pub mod folded;
pub mod hist;
pub mod json;
pub mod lines;
pub mod pprof;
pub mod prometheus;
pub mod table;

use std::{
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::args::OutputArgs;

pub use escape::escape;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns for people
    #[default]
    Text,
    /// JSON Lines: one object per line
    Json,
}

/// Creates a file pfault will write, now, before anything runs: an unwritable path is one
/// clear error up front, not a failure after the traced command has run. `flag` names the
/// option that chose it.
pub fn create(path: &Path, flag: &str) -> Result<File> {
    File::create(path)
        .with_context(|| format!("cannot write {}: choose a writable {flag} path", path.display()))
}

impl<F: clap::ValueEnum + Clone + Default + Send + Sync + 'static> OutputArgs<F> {
    /// Opens the destination now, so an unwritable file fails before any probe is attached.
    /// Output leaves in whole lines; on stdout, which a traced command may share, in pieces
    /// a pipe keeps whole (`--output FILE` keeps the two streams apart altogether).
    pub fn open(&self) -> Result<Box<dyn Write>> {
        Ok(Box::new(match &self.file {
            Some(path) => {
                let file = Named {
                    file: create(path, "--output")?,
                    path: path.clone(),
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

/// A file given by a flag (an SVG, a profile), created up front and written at the end.
pub struct LateFile {
    pub path: PathBuf,
    pub file: File,
}

impl LateFile {
    pub fn create(path: &Path, flag: &str) -> Result<LateFile> {
        Ok(LateFile {
            path: path.to_path_buf(),
            file: create(path, flag)?,
        })
    }
}

/// Wall-clock time as `HH:MM:SS`, for interval headers.
pub fn clock() -> String {
    // SAFETY: time(NULL) and localtime_r into a zeroed tm are always valid.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&now, &mut tm) };
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// One round of a counting tool's rows: JSON Lines, or a table that `table` builds, under the
/// time when more rounds follow (`-i`).
pub fn write_rows<T: Serialize>(
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
