//! Folded stacks, as bcc's `stackcount -f` and flamegraph.pl read them:
//! `comm;root;...;leaf COUNT`.

use std::io::Write;

use anyhow::Result;

/// One folded line from frames already ordered root first.
pub fn line(frames: &[String], count: u64) -> String {
    let mut s = frames
        .iter()
        .map(|f| f.replace([';', ' '], "_"))
        .collect::<Vec<_>>()
        .join(";");
    s.push(' ');
    s.push_str(&count.to_string());
    s
}

pub fn write(w: &mut dyn Write, lines: &[String]) -> Result<()> {
    for l in lines {
        writeln!(w, "{l}")?;
    }
    Ok(())
}
