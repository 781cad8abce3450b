//! Just enough of a BTF reader to find struct member offsets and enum values in the running
//! kernel's `/sys/kernel/btf/vmlinux`.
//!
//! aya's Rust programs cannot carry CO-RE relocations, so the offsets the programs use are
//! looked up here at load time and handed over in `Config`. aya's own BTF types keep member
//! offsets private and the crates that expose them are LGPL; the format is small enough
//! (Documentation/bpf/btf.rst) to read directly.

use anyhow::{bail, Context, Result};
use memmap2::{Mmap, MmapOptions};

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// The blob: mapped where the kernel allows it (6.16+ maps the kernel's own pages, which do
/// not count in pfault's RSS), read into memory elsewhere.
enum Blob {
    Mapped(Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for Blob {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Blob::Mapped(m) => m,
            Blob::Read(v) => v,
        }
    }
}

pub struct Btf {
    data: Blob,
    /// The string section: `data[strings..strings_end]`.
    strings: usize,
    strings_end: usize,
    /// Byte offset of each type record in `data`; type id N is at index N - 1.
    types: Vec<u32>,
    /// Named struct, union and enum ids, sorted by name: found by binary search rather than a
    /// scan per lookup, and without a copy of each name.
    named: Vec<u32>,
}

impl Btf {
    pub(crate) fn from_sys_fs() -> Result<Self> {
        let path = "/sys/kernel/btf/vmlinux";
        let file = std::fs::File::open(path).with_context(|| {
            format!("cannot read {path}: this kernel lacks BTF (CONFIG_DEBUG_INFO_BTF); pfault needs it to find kernel struct offsets (Linux 5.8 and later with it are supported)")
        })?;
        // The kernel refuses shared mappings of it: a private read-only one it takes.
        let data = match unsafe { MmapOptions::new().map_copy_read_only(&file) } {
            Ok(m) => Blob::Mapped(m),
            Err(_) => Blob::Read(std::fs::read(path).with_context(|| format!("cannot read {path}"))?),
        };
        Self::parse_blob(data)
    }

    /// Reads a BTF blob. Anything that does not fit (a section or a type record past the end)
    /// is an error; the lookups then stay inside the blob whatever it holds.
    pub fn parse(data: Vec<u8>) -> Result<Self> {
        Self::parse_blob(Blob::Read(data))
    }

    fn parse_blob(data: Blob) -> Result<Self> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != 0xeb9f {
            bail!("not a little-endian BTF blob");
        }
        if data.len() > u32::MAX as usize {
            bail!("BTF blob of {} bytes is past 4 GiB", data.len());
        }
        let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap()) as usize;
        let hdr_len = u32_at(4);
        let (type_off, type_len, str_off, str_len) = (u32_at(8), u32_at(12), u32_at(16), u32_at(20));
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            Some((start, start.checked_add(len).filter(|&end| end <= data.len())?))
        };
        let ((start, end), (strings, strings_end)) =
            match (section(type_off, type_len), section(str_off, str_len)) {
                (Some(t), Some(s)) if hdr_len >= 24 => (t, s),
                _ => bail!("BTF header points past the blob's {} bytes", data.len()),
            };
        let mut types = Vec::with_capacity(type_len / 24);
        let mut o = start;
        while o < end {
            if o + 12 > end {
                bail!("BTF type {} is cut short", types.len() + 1);
            }
            let info = u32_at(o + 4);
            let (kind, vlen) = ((info >> 24) as u32 & 0x1f, info & 0xffff);
            let next = o
                + 12
                + match kind {
                    1 | 14 | 17 => 4,                                         // INT, VAR, DECL_TAG
                    3 => 12,                                                  // ARRAY
                    KIND_STRUCT | KIND_UNION | 15 | KIND_ENUM64 => 12 * vlen, // and DATASEC
                    KIND_ENUM | 13 => 8 * vlen,                               // and FUNC_PROTO
                    _ => 0,
                };
            if next > end {
                bail!("BTF type {} runs past the type section", types.len() + 1);
            }
            types.push(o as u32);
            o = next;
        }
        let mut btf = Self {
            data,
            strings,
            strings_end,
            types,
            named: Vec::new(),
        };
        // Sorted with each name found once: finding it at every comparison was most of the
        // parse.
        let named = {
            let mut keyed: Vec<(&[u8], u32)> = (1..=btf.types.len() as u32)
                .filter(|&id| {
                    btf.name_off(id) != 0
                        && matches!(btf.kind(id), KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64)
                })
                .map(|id| (btf.name(btf.name_off(id)), id))
                .collect();
            keyed.sort_unstable();
            keyed.into_iter().map(|(_, id)| id).collect()
        };
        btf.named = named;
        Ok(btf)
    }

    /// The name offset of type `id` (an id that has a record).
    fn name_off(&self, id: u32) -> u32 {
        self.u32_at(self.types[id as usize - 1] as usize)
    }

    fn u32_at(&self, o: usize) -> u32 {
        u32::from_le_bytes(self.data[o..o + 4].try_into().unwrap())
    }

    /// A name from the string section; an offset outside it names nothing.
    fn name(&self, off: u32) -> &[u8] {
        let s = self
            .data
            .get(self.strings + off as usize..self.strings_end)
            .unwrap_or_default();
        &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]
    }

    /// Where type `id`'s record starts; `None` for void (0) and ids past the last type.
    fn record(&self, id: u32) -> Option<usize> {
        self.types.get((id as usize).checked_sub(1)?).map(|&o| o as usize)
    }

    /// The kind of type `id`; 0 (unknown) for an id no type has.
    fn kind(&self, id: u32) -> u32 {
        self.record(id).map_or(0, |o| (self.u32_at(o + 4) >> 24) & 0x1f)
    }

    fn find(&self, kinds: &[u32], name: &str) -> Option<u32> {
        let name = name.as_bytes();
        let first = self
            .named
            .partition_point(|&id| self.name(self.name_off(id)) < name);
        self.named[first..]
            .iter()
            .copied()
            .take_while(|&id| self.name(self.name_off(id)) == name)
            .find(|&id| kinds.contains(&self.kind(id)))
    }

    /// Follows typedefs and qualifiers to the underlying type (a few dozen at most: a blob
    /// may loop).
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..64 {
            match self.record(id) {
                Some(o)
                    if matches!(
                        self.kind(id),
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = self.u32_at(o + 8)
                }
                _ => break,
            }
        }
        id
    }

    /// Bit offset of `member` in the struct or union `id`, looking inside anonymous members
    /// (a few dozen deep and a million members at most: a blob may loop).
    fn member(&self, id: u32, member: &str) -> Option<(u32, u32)> {
        self.member_within(id, member, 32, &mut 1_000_000)
    }

    fn member_within(&self, id: u32, member: &str, depth: u32, budget: &mut u32) -> Option<(u32, u32)> {
        if depth == 0 || !matches!(self.kind(id), KIND_STRUCT | KIND_UNION) {
            return None;
        }
        let o = self.record(id)?;
        let info = self.u32_at(o + 4);
        let kind_flag = info >> 31 != 0;
        for i in 0..(info & 0xffff) as usize {
            *budget = budget.checked_sub(1)?;
            let m = o + 12 + 12 * i;
            let (name_off, ty, raw_off) = (self.u32_at(m), self.u32_at(m + 4), self.u32_at(m + 8));
            let bits = if kind_flag { raw_off & 0xff_ffff } else { raw_off };
            let ty = self.resolve(ty);
            if name_off == 0 && matches!(self.kind(ty), KIND_STRUCT | KIND_UNION) {
                if let Some((off, t)) = self.member_within(ty, member, depth - 1, budget) {
                    return Some((bits.checked_add(off)?, t));
                }
            } else if self.name(name_off) == member.as_bytes() {
                return Some((bits, ty));
            }
        }
        None
    }

    /// Byte offset of a dotted member path, e.g. `offset_of("file", "f_path.dentry")`.
    pub fn offset_of(&self, strukt: &str, path: &str) -> Result<u32> {
        let bits = self.bit_offset_of(strukt, path)?;
        if bits % 8 != 0 {
            bail!("kernel BTF: struct {strukt} member {path} is a bit field");
        }
        Ok(bits / 8)
    }

    /// Bit offset of a dotted member path: a bit field's own bit, e.g.
    /// `bit_offset_of("task_struct", "in_execve")`.
    pub(crate) fn bit_offset_of(&self, strukt: &str, path: &str) -> Result<u32> {
        let mut id = self
            .find(&[KIND_STRUCT, KIND_UNION], strukt)
            .with_context(|| format!("kernel BTF has no struct {strukt}"))?;
        let mut total = 0;
        for part in path.split('.') {
            let (off, ty) = self
                .member(id, part)
                .with_context(|| format!("kernel BTF: struct {strukt} has no member {path}"))?;
            total = u32::checked_add(total, off)
                .with_context(|| format!("kernel BTF: struct {strukt} member {path} is past 512 MiB"))?;
            id = ty;
        }
        Ok(total)
    }

    /// The BTF id of a kernel function.
    pub fn func_id(&self, name: &str) -> Option<u32> {
        // One scan: functions are most of the types, too many to index for one lookup.
        (1..=self.types.len() as u32)
            .find(|&id| self.kind(id) == KIND_FUNC && self.name(self.name_off(id)) == name.as_bytes())
    }

    /// The size in bytes of a struct.
    pub(crate) fn struct_size(&self, name: &str) -> Result<u32> {
        let id = self
            .find(&[KIND_STRUCT], name)
            .with_context(|| format!("kernel BTF has no struct {name}"))?;
        Ok(self.u32_at(self.types[id as usize - 1] as usize + 8))
    }

    /// All `(name, value)` pairs of an enum.
    pub fn enum_values(&self, name: &str) -> Result<Vec<(String, u64)>> {
        let id = self
            .find(&[KIND_ENUM, KIND_ENUM64], name)
            .with_context(|| format!("kernel BTF has no enum {name}"))?;
        let o = self.types[id as usize - 1] as usize;
        let vlen = (self.u32_at(o + 4) & 0xffff) as usize;
        let wide = self.kind(id) == KIND_ENUM64;
        Ok((0..vlen)
            .map(|i| {
                let (m, v) = if wide {
                    let m = o + 12 + 12 * i;
                    (m, self.u32_at(m + 4) as u64 | (self.u32_at(m + 8) as u64) << 32)
                } else {
                    let m = o + 12 + 8 * i;
                    (m, self.u32_at(m + 4) as u64)
                };
                (String::from_utf8_lossy(self.name(self.u32_at(m))).into_owned(), v)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the running kernel's BTF: every offset pfault needs must be found there.
    #[test]
    fn finds_kernel_offsets() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("no /sys/kernel/btf/vmlinux here; skipping");
            return;
        };
        assert_eq!(btf.offset_of("vm_area_struct", "vm_start").unwrap(), 0);
        assert_eq!(btf.offset_of("vm_area_struct", "vm_end").unwrap(), 8);
        assert!(
            btf.offset_of("mm_struct", "brk").unwrap() > btf.offset_of("mm_struct", "start_brk").unwrap()
        );
        assert_eq!(btf.offset_of("qstr", "name").unwrap(), 8);
        assert_eq!(btf.struct_size("pt_regs").unwrap(), 21 * 8);
        let reasons = btf.enum_values("vm_fault_reason").unwrap();
        assert!(reasons.contains(&("VM_FAULT_MAJOR".to_string(), 4)));
        assert!(reasons.contains(&("VM_FAULT_RETRY".to_string(), 0x400)));
    }
}
