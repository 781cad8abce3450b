//! The tally as page-types prints it, or as JSON: totals, or one table per mapping.

use std::{collections::BTreeMap, io::Write};

use anyhow::Result;
use serde::Serialize;

use super::{
    kpageflags,
    walk::{HugeCount, Tally},
};
use crate::output::json;

pub(super) struct Report<'a> {
    pub(super) tally: &'a Tally,
    pub(super) groups: &'a [String],
    pub(super) per_mapping: bool,
    pub(super) page: u64,
}

#[derive(Serialize)]
struct JsonRow<'a> {
    flags_hex: String,
    flags: Vec<String>,
    pages: u64,
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    mapping: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonSwapType {
    #[serde(rename = "type")]
    kind: u64,
    pages: u64,
    min_offset: u64,
    max_offset: u64,
}

#[derive(Serialize)]
struct JsonSwapped {
    pages: u64,
    types: Vec<JsonSwapType>,
}

#[derive(Serialize)]
struct JsonSummary {
    pages: u64,
    bytes: u64,
    swapped: JsonSwapped,
    shared_pages: u64,
    thp: HugeCount,
    hugetlb: HugeCount,
}

#[derive(Serialize)]
struct JsonSummaryLine {
    summary: JsonSummary,
}

/// The rows of one mapping (all mappings without `-m`): (flag set, pages), by flag value.
struct Group<'a> {
    mapping: Option<&'a str>,
    rows: Vec<(u64, u64)>,
}

impl Report<'_> {
    /// Groups as printed: one per mapping in address order with `-m`, else one.
    fn grouped(&self) -> Vec<Group<'_>> {
        let mut by_group: BTreeMap<Option<usize>, BTreeMap<u64, u64>> = BTreeMap::new();
        for (&(g, flags), &pages) in &self.tally.rows {
            let key = self.per_mapping.then_some(g);
            *by_group.entry(key).or_default().entry(flags).or_default() += pages;
        }
        by_group
            .into_iter()
            .map(|(g, rows)| Group {
                mapping: g.map(|g| self.groups[g].as_str()),
                rows: rows.into_iter().collect(),
            })
            .collect()
    }

    fn mb(&self, pages: u64) -> u64 {
        (pages * self.page) >> 20
    }

    fn total(&self) -> u64 {
        self.tally.rows.values().sum()
    }

    pub(super) fn text(&self, w: &mut dyn Write) -> Result<()> {
        let width = kpageflags::symbolic_width();
        writeln!(
            w,
            "{:>18}  {:>10} {:>8}  {:<width$}  long-symbolic-flags",
            "flags", "page-count", "MB", "symbolic-flags"
        )?;
        let total_row = |w: &mut dyn Write, label: &str, pages: u64| {
            writeln!(w, "{label:>18}  {pages:>10} {:>8}", self.mb(pages))
        };
        for Group { mapping, rows } in self.grouped() {
            if let Some(m) = mapping {
                writeln!(w, "{}", crate::output::escape(m))?;
            }
            for &(flags, pages) in &rows {
                writeln!(
                    w,
                    "0x{flags:016x}  {pages:>10} {:>8}  {}  {}",
                    self.mb(pages),
                    kpageflags::symbolic(flags),
                    kpageflags::long_names(flags).join(",")
                )?;
            }
            if mapping.is_some() {
                total_row(w, "subtotal", rows.iter().map(|r| r.1).sum())?;
            }
        }
        total_row(w, "total", self.total())?;
        writeln!(w)?;
        let t = self.tally;
        let swapped: u64 = t.swap.values().map(|s| s.pages).sum();
        let types: Vec<String> = t
            .swap
            .iter()
            .map(|(kind, s)| {
                format!(
                    "type {kind}: {} pages at offsets {:#x}-{:#x}",
                    s.pages, s.min_offset, s.max_offset
                )
            })
            .collect();
        if types.is_empty() {
            writeln!(w, "swapped  {swapped:>10} pages")?;
        } else {
            writeln!(w, "swapped  {swapped:>10} pages ({})", types.join("; "))?;
        }
        writeln!(
            w,
            "shared   {:>10} pages mapped more than once (kpagecount > 1)",
            t.shared
        )?;
        for (name, h) in [("thp", t.thp), ("hugetlb", t.hugetlb)] {
            writeln!(
                w,
                "{name:<8} {:>10} huge pages, {} base pages ({} MB)",
                h.huge_pages,
                h.base_pages,
                self.mb(h.base_pages)
            )?;
        }
        Ok(())
    }

    pub(super) fn json(&self, w: &mut dyn Write) -> Result<()> {
        for Group { mapping, rows } in self.grouped() {
            for (flags, pages) in rows {
                json::write_line(
                    w,
                    &JsonRow {
                        flags_hex: format!("0x{flags:016x}"),
                        flags: kpageflags::long_names(flags),
                        pages,
                        bytes: pages * self.page,
                        mapping,
                    },
                )?;
            }
        }
        let t = self.tally;
        let types: Vec<JsonSwapType> = t
            .swap
            .iter()
            .map(|(&kind, s)| JsonSwapType {
                kind,
                pages: s.pages,
                min_offset: s.min_offset,
                max_offset: s.max_offset,
            })
            .collect();
        let total = self.total();
        json::write_line(
            w,
            &JsonSummaryLine {
                summary: JsonSummary {
                    pages: total,
                    bytes: total * self.page,
                    swapped: JsonSwapped {
                        pages: types.iter().map(|s| s.pages).sum(),
                        types,
                    },
                    shared_pages: t.shared,
                    thp: t.thp,
                    hugetlb: t.hugetlb,
                },
            },
        )?;
        Ok(())
    }
}
