//! Aligned text tables: numbers right-aligned, text left-aligned, the last column unpadded.

use std::io::Write;

use anyhow::Result;

pub(crate) struct Table {
    headers: Vec<&'static str>,
    /// Right-align this column (numbers).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(columns: &[(&'static str, bool)]) -> Table {
        Table {
            headers: columns.iter().map(|c| c.0).collect(),
            right: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    /// A row; its cells are escaped (a process or file name may hold control characters).
    pub(crate) fn push(&mut self, row: Vec<String>) {
        self.rows
            .push(row.iter().map(|c| super::escape(c).into_owned()).collect());
    }

    pub(crate) fn write(&self, w: &mut dyn Write) -> Result<()> {
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
pub(crate) fn bytes(n: u64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &Table) -> String {
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn numbers_align_right_text_left_and_nothing_trails() {
        let mut t = Table::new(&[("PID", true), ("COMM", false), ("FAULTS", true)]);
        t.push(row(&["1", "bash", "12"]));
        t.push(row(&["12345", "x", "7"]));
        assert_eq!(
            render(&t),
            "  PID COMM FAULTS\n    1 bash     12\n12345 x         7\n"
        );
    }

    #[test]
    fn a_text_column_last_is_not_padded() {
        let mut t = Table::new(&[("N", true), ("PATH", false)]);
        t.push(row(&["3", "/a b"]));
        t.push(row(&["100", "/c"]));
        t.push(row(&["4", ""]));
        assert_eq!(render(&t), "  N PATH\n  3 /a b\n100 /c\n  4\n");
    }

    #[test]
    fn no_rows_is_the_header_alone() {
        let t = Table::new(&[("COMM", false), ("MINOR", true)]);
        assert_eq!(render(&t), "COMM MINOR\n");
    }

    #[test]
    fn columns_line_up_with_non_ascii_text() {
        let mut t = Table::new(&[("COMM", false), ("N", true)]);
        t.push(row(&["héllo", "1"]));
        t.push(row(&["x", "22"]));
        let text = render(&t);
        // Every row's number ends in the same column (counted in characters).
        let ends: Vec<usize> = text.lines().map(|l| l.chars().count()).collect();
        assert!(ends.windows(2).all(|w| w[0] == w[1]), "{text}");
    }

    #[test]
    fn bytes_as_people_read_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(4096), "4.0 KiB");
        // 78 MiB + 100 KiB = 78.098 MiB
        assert_eq!(bytes((78 << 20) + (100 << 10)), "78.1 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(bytes(1 << 40), "1.0 TiB");
        // TiB is the largest unit: larger sizes stay in it.
        assert_eq!(bytes(1 << 50), "1024.0 TiB");
        assert_eq!(bytes(u64::MAX), "16777216.0 TiB");
    }
}
