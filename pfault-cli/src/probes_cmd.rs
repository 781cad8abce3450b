//! `pfault probes`: what this kernel allows and which probe mode the tools will use.

use anyhow::Result;

pub fn run() -> Result<Option<i32>> {
    let report = crate::probes::report();
    let width = report.lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &report.lines {
        println!("{k:<width$}  {v}");
    }
    Ok(None)
}
