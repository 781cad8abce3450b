//! Aligned text tables: numbers right-aligned, text left-aligned, the last column unpadded.

use std::io::Write;

use anyhow::Result;

pub struct Table {
    headers: Vec<&'static str>,
    /// Right-align this column (numbers).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, bool)]) -> Table {
        Table {
            headers: columns.iter().map(|c| c.0).collect(),
            right: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub fn write(&self, w: &mut dyn Write) -> Result<()> {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].len())
                    .chain([self.headers[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>| -> String {
            let last = cells.len() - 1;
            let mut s = String::new();
            for (i, c) in cells.into_iter().enumerate() {
                if i == last && !self.right[i] {
                    s.push_str(c);
                } else if self.right[i] {
                    s.push_str(&format!("{c:>w$} ", w = widths[i]));
                } else {
                    s.push_str(&format!("{c:<w$} ", w = widths[i]));
                }
            }
            s.trim_end().to_string()
        };
        writeln!(w, "{}", line(self.headers.clone()))?;
        for r in &self.rows {
            writeln!(w, "{}", line(r.iter().map(String::as_str).collect()))?;
        }
        Ok(())
    }
}

/// Bytes as people read them: 4.0 KiB, 78.1 MiB.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
