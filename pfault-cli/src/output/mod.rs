//! Output formats and where output goes. One module per format; subcommands render their
//! own rows and hand them to these writers.

pub mod flamegraph;
pub mod folded;
pub mod hist;
pub mod json;
pub mod table;

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::PathBuf,
};

use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns for people
    #[default]
    Text,
    /// JSON Lines: one object per line
    Json,
}

/// Where results go: stdout, or the file given with `--output`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct OutputArgs {
    /// Output format
    #[arg(short = 'o', long = "format", value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write results to FILE instead of stdout
    #[arg(long = "output", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

impl OutputArgs {
    /// Opens the destination now, so an unwritable file fails before any probe is attached.
    pub fn open(&self) -> Result<Box<dyn Write>> {
        Ok(match &self.file {
            Some(path) => Box::new(BufWriter::with_capacity(
                1 << 16,
                File::create(path).with_context(|| {
                    format!("cannot write {}: choose a writable --output path", path.display())
                })?,
            )),
            None => Box::new(BufWriter::with_capacity(1 << 16, io::stdout())),
        })
    }
}

/// Wall-clock time as `HH:MM:SS`, for interval headers.
pub fn clock() -> String {
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
