//! A binary's call frame information as the kernel side's unwind rows.
//!
//! Every FDE of `.eh_frame` and of `.debug_frame` (decompressed, as Go writes it; from a
//! separate debug file where the binary has none) is run through gimli into rows, `.eh_frame`'s
//! standing where both describe the same code; each row says, from its address on, how to find the CFA (rsp or
//! rbp plus an offset, or the PLT rule) and where the caller's rbp was saved. Addresses
//! become file offsets through the executable segments, so one table serves every process
//! whatever address it maps the file at. Rows that change nothing are dropped, and the end of
//! each FDE that no other one continues gets a `CFA_NONE` row (code without CFI there).

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, RegisterRule,
    UnwindContext, UnwindSection, X86_64,
};
use std::{
    borrow::Cow,
    hash::{BuildHasher, Hash, Hasher},
    io::Read,
};

use object::{
    read::elf::ProgramHeader, CompressionFormat, Object, ObjectSection, ObjectSegment, SegmentFlags,
};
use pfault_common::*;

/// A binary's rows, sorted by file offset.
#[derive(Debug, Default)]
pub(crate) struct Table {
    pub(crate) rows: Vec<UnwindRow>,
    /// FDEs that could not be read (a truncated or corrupt section): their code has no rows.
    pub(crate) bad_fdes: usize,
    /// Where its rows came from: `.eh_frame`, `.debug_frame`, a debug file's `.debug_frame`.
    pub(crate) sources: Vec<String>,
}

/// Why a file's code has no table (and is unwound by frame pointer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NoCfi {
    NotElf(String),
    NotX86_64(String),
    Unreadable {
        section: &'static str,
        error: String,
    },
    Stripped,
    DescribesNoCode,
    TooManyRows(usize),
    CannotMap(String),
    /// `UNWIND_ROWS` is full (`--unwind-mb`).
    NoRoom(usize),
    /// Mapping the rows' window of `UNWIND_ROWS` failed.
    CannotWrite(String),
    /// `UNWIND_FILES` would not take the file (full).
    FileTableFull(String),
}

impl std::fmt::Display for NoCfi {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            NoCfi::NotElf(e) => write!(f, "not an ELF file ({e})"),
            NoCfi::NotX86_64(arch) => write!(f, "{arch} code, not x86-64"),
            NoCfi::Unreadable { section, error } => write!(f, "reading {section}: {error}"),
            NoCfi::Stripped => f.write_str("no .eh_frame or .debug_frame (stripped of its CFI)"),
            NoCfi::DescribesNoCode => f.write_str("its CFI describes no code"),
            NoCfi::TooManyRows(n) => write!(
                f,
                "{n} rows, more than the {UNWIND_TABLE_MAX_ROWS} a table may hold"
            ),
            NoCfi::CannotMap(e) => write!(f, "cannot map it: {e}"),
            NoCfi::NoRoom(n) => write!(f, "no room left for its {n} rows: raise --unwind-mb"),
            NoCfi::CannotWrite(e) => write!(f, "mapping its rows into the unwind-row map: {e}"),
            NoCfi::FileTableFull(e) => write!(
                f,
                "the table of binaries ({} entries) would not take it: {e}",
                capacity::UNWIND_FILES
            ),
        }
    }
}

impl serde::Serialize for NoCfi {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An executable segment: addresses `vaddr..vaddr + size` are file offsets `offset..`.
struct Segment {
    vaddr: u64,
    size: u64,
    offset: u64,
}

/// A separate debug file's contents (`/usr/lib/debug`), mapped by [`cfi`]'s caller.
pub(crate) type DebugFile = (std::path::PathBuf, memmap2::Mmap);

/// What a binary's rows are made of: its executable segments and its CFI, as read from it
/// (and from its separate debug file).
pub(crate) struct Cfi<'d> {
    segments: Vec<Segment>,
    eh_frame: Option<(&'d [u8], BaseAddresses)>,
    /// Its `.debug_frame`, and where it came from (this file, or its debug file's path).
    debug_frame: Option<(Cow<'d, [u8]>, String)>,
    /// A section that could not be read loses only its own rows: said when no other has any.
    unreadable: Option<NoCfi>,
}

/// The CFI of the ELF file `data`: its `.eh_frame` and `.debug_frame` (or the `.debug_frame`
/// of the separate debug file `debug_file` finds for it); an error says why it has none to
/// read (not ELF, not x86-64).
pub(crate) fn cfi(
    data: &[u8],
    debug_file: impl FnOnce(&object::File) -> Option<DebugFile>,
) -> Result<Cfi<'_>, NoCfi> {
    let file = object::File::parse(data).map_err(|e| NoCfi::NotElf(e.to_string()))?;
    if file.architecture() != object::Architecture::X86_64 {
        return Err(NoCfi::NotX86_64(format!("{:?}", file.architecture())));
    }
    let segments: Vec<Segment> = file
        .segments()
        .filter(|s| matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0))
        .map(|s| Segment {
            vaddr: s.address(),
            size: s.file_range().1,
            offset: s.file_range().0,
        })
        .collect();
    let mut unreadable = None;
    let eh_frame = eh_frame(&file, data).unwrap_or_else(|e| {
        unreadable = Some(e);
        None
    });
    let debug_frame = match section_bytes(&file, ".debug_frame") {
        Ok(Some(bytes)) => Some((bytes, ".debug_frame".to_string())),
        Ok(None) => debug_file(&file).and_then(|(path, map)| {
            // Copied out of the debug file's map, which goes with this call.
            let f = object::File::parse(&*map).ok()?;
            let bytes = section_bytes(&f, ".debug_frame").ok().flatten()?;
            Some((
                Cow::Owned(bytes.into_owned()),
                format!("{} .debug_frame", path.display()),
            ))
        }),
        Err(e) => {
            unreadable = unreadable.or(Some(e));
            None
        }
    };
    Ok(Cfi {
        segments,
        eh_frame,
        debug_frame,
        unreadable,
    })
}

impl Cfi<'_> {
    /// A hash of everything its rows are made of: files with the same (a container's copy of
    /// the host's C library, the same library in two images' layers) share one table.
    pub(crate) fn digest(&self, state: &impl BuildHasher) -> u64 {
        let mut h = state.build_hasher();
        for s in &self.segments {
            (s.vaddr, s.size, s.offset).hash(&mut h);
        }
        if let Some((bytes, bases)) = &self.eh_frame {
            bytes.hash(&mut h);
            format!("{bases:?}").hash(&mut h);
        }
        if let Some((bytes, _)) = &self.debug_frame {
            bytes.hash(&mut h);
        }
        h.finish()
    }

    /// Its rows; an error says why it has none (no CFI, or CFI that describes no code).
    pub(crate) fn table(self) -> Result<Table, NoCfi> {
        let mut rows = Rows::default();
        let mut sources = Vec::new();
        if let Some((bytes, bases)) = &self.eh_frame {
            rows.section(&EhFrame::new(bytes, LittleEndian), bases, &self.segments);
            sources.push(".eh_frame".to_string());
        }
        // Where .eh_frame covers code, its rows stand (it is what the program's own unwinder
        // reads); .debug_frame fills in the rest.
        rows.keep_covered();
        if let Some((bytes, source)) = &self.debug_frame {
            rows.section(&debug_frame(bytes), &BaseAddresses::default(), &self.segments);
            sources.push(source.clone());
        }
        if sources.is_empty() {
            return Err(self.unreadable.unwrap_or(NoCfi::Stripped));
        }
        let mut table = rows.finish();
        if table.rows.is_empty() {
            return Err(self.unreadable.unwrap_or(NoCfi::DescribesNoCode));
        }
        if table.rows.len() > UNWIND_TABLE_MAX_ROWS {
            return Err(NoCfi::TooManyRows(table.rows.len()));
        }
        table.sources = sources;
        Ok(table)
    }
}

/// The rows of the ELF file `data` (see [`cfi`]).
#[cfg(test)]
pub(crate) fn build(
    data: &[u8],
    debug_file: impl FnOnce(&object::File) -> Option<DebugFile>,
) -> Result<Table, NoCfi> {
    cfi(data, debug_file)?.table()
}

fn debug_frame(bytes: &[u8]) -> DebugFrame<EndianSlice<'_, LittleEndian>> {
    let mut frame = DebugFrame::new(bytes, LittleEndian);
    frame.set_address_size(8);
    frame
}

/// `.eh_frame`'s bytes and the addresses its pointers are relative to: by its section, or,
/// in a file whose section headers are gone, through `PT_GNU_EH_FRAME` (`.eh_frame_hdr`,
/// which the C library's own unwinder finds it by).
fn eh_frame<'d>(file: &object::File<'d>, data: &'d [u8]) -> Result<Option<(&'d [u8], BaseAddresses)>, NoCfi> {
    let addr_of = |name: &str| file.section_by_name(name).map(|s| s.address());
    if let Some(section) = file.section_by_name(".eh_frame") {
        let bytes = section.data().map_err(|e| NoCfi::Unreadable {
            section: ".eh_frame",
            error: e.to_string(),
        })?;
        // Empty or NOBITS (a debug file's): no CFI of its own.
        if bytes.is_empty() {
            return Ok(None);
        }
        let mut bases = BaseAddresses::default().set_eh_frame(section.address());
        if let Some(a) = addr_of(".text") {
            bases = bases.set_text(a);
        }
        if let Some(a) = addr_of(".got") {
            bases = bases.set_got(a);
        }
        return Ok(Some((bytes, bases)));
    }
    // A file with section headers and no .eh_frame has none: its PT_GNU_EH_FRAME, if any,
    // is what was left of it (objcopy --remove-section leaves the program header).
    let object::File::Elf64(elf) = file else {
        return Ok(None);
    };
    if file.sections().next().is_some() {
        return Ok(None);
    }
    let endian = elf.endian();
    let Some(hdr) = elf
        .elf_program_headers()
        .iter()
        .find(|p| p.p_type(endian) == object::elf::PT_GNU_EH_FRAME)
    else {
        return Ok(None);
    };
    let unreadable = |error: String| NoCfi::Unreadable {
        section: ".eh_frame (by PT_GNU_EH_FRAME)",
        error,
    };
    let hdr_addr = hdr.p_vaddr(endian);
    let hdr_bytes = hdr
        .data(endian, data)
        .map_err(|_| unreadable("its header lies outside the file".into()))?;
    let bases = BaseAddresses::default().set_eh_frame_hdr(hdr_addr);
    let parsed = gimli::EhFrameHdr::new(hdr_bytes, LittleEndian)
        .parse(&bases, 8)
        .map_err(|e| unreadable(e.to_string()))?;
    let gimli::Pointer::Direct(eh_addr) = parsed.eh_frame_ptr() else {
        return Err(unreadable("its header points at it indirectly".into()));
    };
    // The section runs to its terminator, within the segment that loads it.
    let bytes = file
        .segments()
        .find_map(|s| {
            let (off, size) = s.file_range();
            let at = eh_addr.checked_sub(s.address())?;
            (at < size).then(|| data.get((off + at) as usize..(off + size) as usize))?
        })
        .ok_or_else(|| unreadable(format!("{eh_addr:#x} is in no segment")))?;
    Ok(Some((bytes, bases.set_eh_frame(eh_addr))))
}

/// Decompressed sections beyond this are refused: a corrupt size would take pfault's memory.
const MAX_SECTION_BYTES: u64 = 1 << 30;

/// A section's bytes, decompressed where they are (`SHF_COMPRESSED`, as Go and `gcc -gz`
/// write debug sections).
fn section_bytes<'d>(file: &object::File<'d>, name: &'static str) -> Result<Option<Cow<'d, [u8]>>, NoCfi> {
    let Some(section) = file.section_by_name(name) else {
        return Ok(None);
    };
    let unreadable = |error: String| NoCfi::Unreadable { section: name, error };
    let c = section.compressed_data().map_err(|e| unreadable(e.to_string()))?;
    let bytes = match c.format {
        CompressionFormat::None => Cow::Borrowed(c.data),
        CompressionFormat::Zlib if c.uncompressed_size <= MAX_SECTION_BYTES => {
            let mut out = Vec::with_capacity(c.uncompressed_size as usize);
            flate2::read::ZlibDecoder::new(c.data)
                .take(c.uncompressed_size)
                .read_to_end(&mut out)
                .map_err(|e| unreadable(format!("decompressing it: {e}")))?;
            if out.len() as u64 != c.uncompressed_size {
                return Err(unreadable(format!(
                    "{} bytes decompressed, its header says {}",
                    out.len(),
                    c.uncompressed_size
                )));
            }
            Cow::Owned(out)
        }
        CompressionFormat::Zlib => {
            return Err(unreadable(format!(
                "{} bytes once decompressed, more than pfault reads",
                c.uncompressed_size
            )))
        }
        other => {
            return Err(unreadable(format!(
                "compressed as {other:?}, which pfault cannot read"
            )))
        }
    };
    Ok((!bytes.is_empty()).then_some(bytes))
}

/// Rows as they are gathered: (file offset, is the end of an FDE, rule).
#[derive(Default)]
struct Rows {
    raw: Vec<(u64, bool, UnwindRow)>,
    bad_fdes: usize,
    /// The file offsets the FDEs read so far cover.
    fdes: Vec<(u64, u64)>,
    /// Of those, the ones a later section's FDEs must not overlap: sorted, disjoint.
    covered: Vec<(u64, u64)>,
}

impl Rows {
    fn section<'a, S>(&mut self, section: &S, bases: &BaseAddresses, segments: &[Segment])
    where
        S: UnwindSection<EndianSlice<'a, LittleEndian>>,
    {
        let to_off = |vaddr: u64| {
            segments
                .iter()
                .find(|s| s.vaddr <= vaddr && vaddr < s.vaddr + s.size)
                .map(|s| vaddr - s.vaddr + s.offset)
        };
        let mut ctx = Box::new(UnwindContext::new());
        let mut entries = section.entries(bases);
        loop {
            let fde = match entries.next() {
                Ok(Some(CieOrFde::Fde(partial))) => partial.parse(S::cie_from_offset),
                Ok(Some(CieOrFde::Cie(_))) => continue,
                Ok(None) => break,
                // The section cannot be walked past a bad entry.
                Err(_) => {
                    self.bad_fdes += 1;
                    break;
                }
            };
            let Ok(fde) = fde else {
                self.bad_fdes += 1;
                continue;
            };
            let Some(end) = to_off(fde.end_address().saturating_sub(1)).map(|o| o + 1) else {
                continue;
            };
            let begin = to_off(fde.initial_address()).unwrap_or(end);
            if self.covers(begin, end) {
                continue;
            }
            let Ok(mut table) = fde.rows(section, bases, &mut ctx) else {
                self.bad_fdes += 1;
                continue;
            };
            let start = self.raw.len();
            let mut ok = true;
            loop {
                match table.next_row() {
                    Ok(Some(row)) => {
                        if let Some(off) = to_off(row.start_address()) {
                            self.raw.push((off, false, rule(row, section)));
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                self.raw.truncate(start);
                self.bad_fdes += 1;
                continue;
            }
            self.raw.push((end, true, UnwindRow::default()));
            self.fdes.push((begin, end));
        }
    }

    /// The code of the FDEs read so far is theirs: the next section's FDEs that overlap it
    /// are passed over.
    fn keep_covered(&mut self) {
        let mut fdes = std::mem::take(&mut self.fdes);
        fdes.sort_unstable();
        for (begin, end) in fdes {
            match self.covered.last_mut() {
                Some(last) if begin <= last.1 => last.1 = last.1.max(end),
                _ => self.covered.push((begin, end)),
            }
        }
    }

    fn covers(&self, begin: u64, end: u64) -> bool {
        let i = self.covered.partition_point(|&(_, e)| e <= begin);
        self.covered.get(i).is_some_and(|&(b, _)| b < end)
    }

    fn finish(mut self) -> Table {
        // At one offset, a row beats the end of the FDE before it.
        self.raw.sort_by_key(|&(off, end, _)| (off, end));
        self.raw.dedup_by_key(|&mut (off, _, _)| off);
        let mut rows: Vec<UnwindRow> = Vec::with_capacity(self.raw.len());
        for (off, _, mut r) in self.raw {
            let Ok(off) = u32::try_from(off) else { break };
            r.off = off;
            let same = rows
                .last()
                .is_some_and(|l| (l.cfa, l.cfa_off, l.rbp) == (r.cfa, r.cfa_off, r.rbp));
            if !same {
                rows.push(r);
            }
        }
        Table {
            rows,
            bad_fdes: self.bad_fdes,
            sources: Vec::new(),
        }
    }
}

/// The CFA rule of glibc's and binutils' PLT entries: rsp + 8, plus 8 once rip is `N` or more
/// bytes into its 16-byte slot.
fn plt_threshold(expr: &[u8]) -> Option<i16> {
    // DW_OP_breg7 8, DW_OP_breg16 0, DW_OP_lit15, DW_OP_and, DW_OP_litN, DW_OP_ge, DW_OP_lit3,
    // DW_OP_shl, DW_OP_plus
    match expr {
        [0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, lit @ 0x30..=0x4f, 0x2a, 0x33, 0x24, 0x22] => {
            Some((lit - 0x30) as i16)
        }
        _ => None,
    }
}

/// The CFA rule of a signal frame (glibc's `__restore_rt`): `DW_OP_breg7 160; DW_OP_deref`,
/// the interrupted rsp saved in the `ucontext` at rsp.
fn is_signal_frame(expr: &[u8]) -> bool {
    // 160 as a signed LEB128 is 0xa0 0x01.
    expr == [0x77, 0xa0, 0x01, 0x06]
}

/// A DWARF register number of x86-64's general-purpose registers as `CFA_REG*` rows name it
/// (`REG_*`: its `pt_regs` word).
fn reg_of(r: gimli::Register) -> Option<u8> {
    const BY_DWARF: [u8; 16] = [10, 12, 11, 5, 13, 14, REG_RBP, REG_RSP, 9, 8, 7, 6, 3, 2, 1, 0];
    BY_DWARF.get(r.0 as usize).copied()
}

/// `DW_OP_bregN off; DW_OP_deref`, then maybe `DW_OP_plus_uconst plus`: (N, off, plus).
fn breg_deref(expr: &[u8]) -> Option<(gimli::Register, i64, u64)> {
    let (&op, rest) = expr.split_first()?;
    let mut rest = EndianSlice::new(rest, LittleEndian);
    let off = gimli::Reader::read_sleb128(&mut rest).ok()?;
    let reg = gimli::Register(op.checked_sub(0x70).filter(|r| *r < 16)? as u16);
    match rest.slice() {
        [0x06] => Some((reg, off, 0)),
        [0x06, 0x23, plus @ ..] => {
            let mut plus = EndianSlice::new(plus, LittleEndian);
            let n = gimli::Reader::read_uleb128(&mut plus).ok()?;
            plus.slice().is_empty().then_some((reg, off, n))
        }
        _ => None,
    }
}

/// The CFA rule `[register + offset] + plus` as a row's kind and `cfa_off`.
fn deref_rule(register: gimli::Register, offset: i64, plus: u64) -> Option<(u8, i16)> {
    let reg = reg_of(register)?;
    let off = i16::try_from(offset).ok()?;
    match plus {
        0 => Some((CFA_DEREF | reg << 4, off)),
        // OpenSSL's: rsp, plus up to 15 words (the return address and what was pushed).
        _ if reg == REG_RSP && plus.is_multiple_of(8) && plus / 8 < 16 => {
            Some((CFA_DEREF_RSP | ((plus / 8) as u8) << 4, off))
        }
        _ => None,
    }
}

/// The CFA rule `register + offset` as a row's kind and `cfa_off`.
fn reg_rule(register: gimli::Register, offset: i64) -> Option<(u8, i16)> {
    let reg = reg_of(register)?;
    match (reg, i16::try_from(offset)) {
        (REG_RSP, Ok(off)) => Some((CFA_RSP, off)),
        (REG_RBP, Ok(off)) => Some((CFA_RBP, off)),
        (_, Ok(off)) => Some((CFA_REG | reg << 4, off)),
        // A frame of more than 32 KiB: its size is a multiple of 8.
        (_, Err(_)) if offset % 8 == 0 => Some((CFA_REG_X8 | reg << 4, i16::try_from(offset / 8).ok()?)),
        _ => None,
    }
}

fn rule<'a, S>(row: &gimli::UnwindTableRow<usize>, section: &S) -> UnwindRow
where
    S: UnwindSection<EndianSlice<'a, LittleEndian>>,
{
    let none = UnwindRow::default();
    let expr = match row.cfa() {
        CfaRule::Expression(e) => e.get(section).ok().map(|e| e.0.slice()),
        CfaRule::RegisterAndOffset { .. } => None,
    };
    if expr.is_some_and(is_signal_frame) {
        return UnwindRow {
            cfa: CFA_SIGNAL,
            ..none
        };
    }
    // Where the return address is, when not where the call left it (CFA - 8): as
    // `CFA_RSP_RA`'s nibble.
    let ra_moved = match row.register(X86_64::RA) {
        Some(RegisterRule::Offset(-8)) => None,
        Some(RegisterRule::Offset(o)) if o % 8 == 0 && (-136..=-16).contains(&o) => Some((-o / 8 - 2) as u8),
        Some(RegisterRule::Undefined) => return UnwindRow { cfa: CFA_END, ..none },
        _ => return none,
    };
    let cfa = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => reg_rule(*register, *offset),
        CfaRule::Expression(_) => expr.and_then(|e| {
            if let Some(n) = plt_threshold(e) {
                return Some((CFA_PLT, n));
            }
            let (register, offset, plus) = breg_deref(e)?;
            deref_rule(register, offset, plus)
        }),
    };
    let Some((mut cfa, cfa_off)) = cfa else {
        return none;
    };
    if let Some(n) = ra_moved {
        // Only an rsp-based CFA leaves the kind's high nibble free for it.
        if cfa != CFA_RSP {
            return none;
        }
        cfa = CFA_RSP_RA | n << 4;
    }
    let rbp = match row.register(X86_64::RBP) {
        Some(RegisterRule::Offset(o)) if o % 8 == 0 && o != 0 => match i8::try_from(o / 8) {
            Ok(v) if v != RBP_AT_RBP => v,
            _ => return none,
        },
        Some(RegisterRule::Expression(e)) => match e.get(section).map(|e| e.0.slice()) {
            // DW_OP_breg6 0
            Ok([0x76, 0x00]) => RBP_AT_RBP,
            _ => 0,
        },
        // Unchanged (the default), or kept somewhere the kernel side cannot follow: the caller
        // sees the value it has, as a frame-pointer walk would.
        _ => 0,
    };
    UnwindRow {
        off: 0,
        cfa_off,
        cfa,
        rbp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of `data` by itself, without a separate debug file.
    fn alone(data: &[u8]) -> Result<Table, NoCfi> {
        build(data, |_| None)
    }

    fn row_at(t: &Table, off: u32) -> UnwindRow {
        *t.rows.iter().rev().find(|r| r.off <= off).expect("a row")
    }

    /// The file offset of `addr` in this process, and the file mapped there.
    fn file_offset_of(addr: u64) -> (String, u64) {
        let maps = crate::procfs::read_maps(std::process::id()).unwrap();
        let m = maps
            .iter()
            .find(|m| m.start <= addr && addr < m.end)
            .expect("mapped");
        (m.path.to_string(), addr - m.start + m.file_offset)
    }

    #[test]
    fn libc_memset_starts_with_the_return_address_on_top() {
        let addr = libc::memset as *const () as u64;
        let (path, off) = file_offset_of(addr);
        let t = alone(&std::fs::read(&path).unwrap()).unwrap();
        assert!(t.rows.len() > 1000, "{} rows for {path}", t.rows.len());
        assert!(t.rows.windows(2).all(|w| w[0].off < w[1].off), "sorted, unique");
        // At a function's first instruction the CFA is rsp + 8 (just the return address).
        let r = row_at(&t, off as u32);
        assert_eq!(
            (r.cfa, r.cfa_off),
            (CFA_RSP, 8),
            "memset at {off:#x} of {path}: {r:?}"
        );
    }

    #[test]
    fn a_functions_body_saves_rbp_where_its_cfi_says() {
        // This test binary's own code: Rust keeps frame pointers off, so rows carry rsp rules;
        // somewhere rbp is saved (pushed by a function that uses it).
        let t = alone(&std::fs::read("/proc/self/exe").unwrap()).unwrap();
        assert!(t.rows.iter().any(|r| r.cfa == CFA_RSP && r.cfa_off > 8));
        assert!(t.rows.iter().any(|r| r.rbp < 0));
        assert!(t.rows.iter().any(|r| r.cfa == CFA_NONE), "FDE ends");
    }

    #[test]
    fn libc_has_its_signal_frame() {
        let libc = std::fs::read(file_offset_of(libc::memset as *const () as u64).0).unwrap();
        let t = alone(&libc).unwrap();
        assert!(t.rows.iter().any(|r| r.cfa == CFA_SIGNAL), "__restore_rt's row");
    }

    #[test]
    fn cfa_rules_beyond_rsp_and_rbp_plus_a_small_offset() {
        let (rsp, rbp, r11) = (X86_64::RSP, X86_64::RBP, X86_64::R11);
        // gcc's stack-clash probe loop: r11 + 204808.
        assert_eq!(reg_rule(r11, 204808), Some((CFA_REG_X8 | 6 << 4, 25601)));
        assert_eq!(reg_rule(rsp, 24), Some((CFA_RSP, 24)));
        assert_eq!(reg_rule(rsp, 40000), Some((CFA_REG_X8 | REG_RSP << 4, 5000)));
        assert_eq!(reg_rule(rsp, 40001), None, "not a multiple of 8");
        assert_eq!(reg_rule(rsp, 8 << 20), None, "beyond 256 KiB");
        assert_eq!(reg_rule(X86_64::RA, 8), None, "not a general register");
        // gcc's realigning prologue: DW_OP_breg6 -40; DW_OP_deref.
        let drap = breg_deref(&[0x76, 0x58, 0x06]).unwrap();
        assert_eq!(drap, (rbp, -40, 0));
        assert_eq!(
            deref_rule(drap.0, drap.1, drap.2),
            Some((CFA_DEREF | REG_RBP << 4, -40))
        );
        // OpenSSL's: DW_OP_breg7 40; DW_OP_deref; DW_OP_plus_uconst 8.
        let saved = breg_deref(&[0x77, 0x28, 0x06, 0x23, 0x08]).unwrap();
        assert_eq!(saved, (rsp, 40, 8));
        assert_eq!(
            deref_rule(saved.0, saved.1, saved.2),
            Some((CFA_DEREF_RSP | 1 << 4, 40))
        );
        assert_eq!(deref_rule(rbp, 40, 8), None, "an addend only to rsp");
        assert_eq!(
            breg_deref(&[0x77, 0x28, 0x06, 0x23, 0x08, 0x22]),
            None,
            "more after"
        );
        assert_eq!(breg_deref(&[0x92, 0x28, 0x06]), None, "DW_OP_bregx");
    }

    #[test]
    fn plt_rule_is_recognized() {
        let expr = [0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22];
        assert_eq!(plt_threshold(&expr), Some(11));
        assert_eq!(plt_threshold(&expr[..10]), None);
    }

    #[test]
    fn files_with_the_same_cfi_share_a_digest_and_others_do_not() {
        let data = std::fs::read("/proc/self/exe").unwrap();
        let file = object::File::parse(&*data).unwrap();
        let range = |name| {
            let (off, len) = file.section_by_name(name).unwrap().file_range().unwrap();
            off as usize..(off + len) as usize
        };
        let (eh, rodata) = (range(".eh_frame"), range(".rodata"));
        let state = std::hash::RandomState::new();
        let digest = |d: &[u8]| cfi(d, |_| None).unwrap().digest(&state);
        let of = digest(&data);
        // Another copy, its data changed (a container's library, another build id): the same.
        let mut copy = data.clone();
        copy[rodata.start + rodata.len() / 2] ^= 0xff;
        assert_eq!(digest(&copy), of);
        // A byte of its CFI changed: another table.
        let mut copy = data.clone();
        copy[eh.start + eh.len() / 2] ^= 0xff;
        assert_ne!(digest(&copy), of);
    }

    #[test]
    fn truncated_or_foreign_files_give_errors_not_panics() {
        let libc = std::fs::read(file_offset_of(libc::memset as *const () as u64).0).unwrap();
        for cut in [0, 16, 64, 4096, libc.len() / 2, libc.len() - 1] {
            let _ = alone(&libc[..cut]);
        }
        // A copy whose .eh_frame is cut short in place.
        let file = object::File::parse(&*libc).unwrap();
        let eh = file.section_by_name(".eh_frame").unwrap();
        let (at, len) = eh.file_range().unwrap();
        let mut bad = libc.clone();
        for b in &mut bad[(at + len / 2) as usize..(at + len) as usize] {
            *b = 0xff;
        }
        let t = alone(&bad).unwrap();
        assert!(t.bad_fdes > 0, "the corrupt half is counted");
        assert!(alone(b"not an elf").is_err());
    }

    #[test]
    fn without_section_headers_eh_frame_is_found_by_its_program_header() {
        let libc = std::fs::read(file_offset_of(libc::memset as *const () as u64).0).unwrap();
        let whole = alone(&libc).unwrap();
        // e_shoff, e_shnum and e_shstrndx cleared, as `sstrip` and some packers leave files.
        let mut bare = libc.clone();
        bare[0x28..0x30].fill(0);
        bare[0x3c..0x40].fill(0);
        assert_eq!(object::File::parse(&*bare).unwrap().sections().count(), 0);
        let t = alone(&bare).unwrap();
        assert_eq!(t.rows, whole.rows, "the same rows as with its sections");
        assert_eq!(t.sources, [".eh_frame"]);
        assert_eq!(t.bad_fdes, whole.bad_fdes, "read to its terminator, not past");
    }

    #[test]
    fn a_later_sections_fdes_give_way_where_an_earlier_ones_cover() {
        let mut rows = Rows {
            fdes: vec![(300, 400), (100, 200), (150, 250)],
            ..Default::default()
        };
        rows.keep_covered();
        assert_eq!(rows.covered, [(100, 250), (300, 400)]);
        for (b, e, covered) in [
            (0, 100, false),
            (0, 101, true),
            (249, 260, true),
            (250, 300, false),
            (260, 310, true),
            (399, 500, true),
            (400, 500, false),
        ] {
            assert_eq!(rows.covers(b, e), covered, "{b}..{e}");
        }
    }
}
