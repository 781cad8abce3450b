//! JSON Lines: one object per line, flushed by the caller's writer.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;

pub fn write_line<T: Serialize>(w: &mut dyn Write, value: &T) -> Result<()> {
    serde_json::to_writer(&mut *w, value)?;
    w.write_all(b"\n")?;
    Ok(())
}
