//! Flame graphs drawn with inferno from folded lines.

use std::io::BufWriter;

use anyhow::{Context, Result};
use inferno::flamegraph::{self, color::BasicPalette, Options, Palette};

use super::Reserved;

/// Draws `folded` into `out`; `unit` names what the lines' numbers count (tooltips say
/// "N unit").
pub(crate) fn write_svg(out: Reserved, title: &str, unit: &str, folded: &[String]) -> Result<()> {
    let file = out.take()?;
    let mut opts = Options::default();
    opts.title = title.to_string();
    opts.count_name = unit.into();
    opts.colors = Palette::Basic(BasicPalette::Mem);
    if folded.is_empty() {
        // inferno refuses an empty profile; an empty graph still says "nothing faulted".
        opts.title = format!("{title} (no faults)");
        return flamegraph::from_lines(&mut opts, ["no_faults 1"].iter().copied(), BufWriter::new(file))
            .context("drawing the flame graph");
    }
    flamegraph::from_lines(&mut opts, folded.iter().map(String::as_str), BufWriter::new(file))
        .context("drawing the flame graph")
}
