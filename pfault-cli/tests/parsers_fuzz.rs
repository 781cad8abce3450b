//! Property tests of the hand-written parsers: whatever bytes or text they are given, they never
//! panic; what does not parse is an error (or, for the total functions, well-formed output).
//!
//! Each property runs a bounded number of cases so the whole file takes seconds in release;
//! `PROPTEST_CASES=N` runs N cases of each instead (e.g. for a long fuzzing session).

use std::sync::OnceLock;

use pfault::{
    btf::Btf,
    commands::pages::kpageflags::{expand, long_names, pme, symbolic, symbolic_width},
    procfs::{parse_maps, MapEntry, MapPath},
    records::{bytes_of, decode, Record, RecordError},
};
use pfault_common::{
    FaultEvent, FaultEventStacks, LateStack, MapSeen, TaskSeen, UnwindNeed, MAX_STACK, REC_FAULT, REC_LATE,
    REC_MAP, REC_STACK, REC_TASK, REC_UNWIND, STACK_FRAMES_HEADER,
};
use proptest::{collection::vec, prelude::*, test_runner::Config};

/// `default` cases per property unless `PROPTEST_CASES` says otherwise. (Proptest reads that
/// variable only into its default config, which a test's own `cases` would override.)
fn config(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        // Proptest finds no source file to keep failures next to in an integration test: a
        // failure prints its minimal input, to put in a test of its own.
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// BTF

const KIND_INT: u32 = 1;
const KIND_STRUCT: u32 = 4;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_CONST: u32 = 10;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_ENUM64: u32 = 19;

/// A BTF blob written by hand (Documentation/bpf/btf.rst): a 24-byte header, the type
/// section, the string section.
#[derive(Default)]
struct BlobBuilder {
    types: Vec<u8>,
    strings: Vec<u8>,
}

impl BlobBuilder {
    fn new() -> Self {
        // Offset 0 is the empty name.
        BlobBuilder {
            types: Vec::new(),
            strings: vec![0],
        }
    }

    fn str(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    /// One type record: name, info (kind, vlen, kind_flag), size or type, then `extra` words.
    fn ty(&mut self, name: &str, kind: u32, vlen: u32, size_or_type: u32, extra: &[u32]) {
        let name = self.str(name);
        for w in [name, kind << 24 | vlen, size_or_type].iter().chain(extra) {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
    }

    fn build(&self) -> Vec<u8> {
        let (tl, sl) = (self.types.len() as u32, self.strings.len() as u32);
        let mut b = vec![0x9f, 0xeb, 1, 0];
        for w in [24u32, 0, tl, tl, sl] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&self.types);
        b.extend_from_slice(&self.strings);
        b
    }
}

/// Types 1..=9: `int`; `struct inner { int y at 4 }`; `struct s { int a at 0; inner_t (an
/// anonymous member) at 8; const int b at 16; struct inner n at 20 }`; `typedef inner_t`;
/// `const int`; `enum e { A = 1, B = 4 }`; `enum64 e64 { BIG = 0x2_0000_0001 }`; a prototype;
/// `func f`.
fn small_blob() -> Vec<u8> {
    let mut b = BlobBuilder::new();
    b.ty("int", KIND_INT, 0, 4, &[32]); // 1
    let y = b.str("y");
    b.ty("inner", KIND_STRUCT, 1, 8, &[y, 1, 32]); // 2
    let (a, bb, n) = (b.str("a"), b.str("b"), b.str("n"));
    b.ty(
        "s",
        KIND_STRUCT,
        4,
        28,
        &[a, 1, 0, 0, 4, 64, bb, 5, 128, n, 2, 160],
    ); // 3
    b.ty("inner_t", KIND_TYPEDEF, 0, 2, &[]); // 4
    b.ty("", KIND_CONST, 0, 1, &[]); // 5
    let (ea, eb) = (b.str("A"), b.str("B"));
    b.ty("e", KIND_ENUM, 2, 4, &[ea, 1, eb, 4]); // 6
    let big = b.str("BIG");
    b.ty("e64", KIND_ENUM64, 1, 8, &[big, 1, 2]); // 7
    b.ty("", KIND_FUNC_PROTO, 0, 1, &[]); // 8
    b.ty("f", KIND_FUNC, 0, 8, &[]); // 9
    b.build()
}

/// Every lookup pfault makes, on whatever parsed: none may panic (or loop).
fn query(btf: &Btf) {
    for (s, m) in [
        ("s", "a"),
        ("s", "y"),
        ("s", "n.y"),
        ("s", "n.y.z"),
        ("inner", "y"),
        ("vm_area_struct", "vm_start"),
        ("file", "f_path.dentry"),
    ] {
        let _ = btf.offset_of(s, m);
    }
    let _ = btf.enum_values("e");
    let _ = btf.enum_values("e64");
    let _ = btf.enum_values("vm_fault_reason");
    let _ = btf.func_id("f");
    let _ = btf.func_id("handle_mm_fault");
}

/// The running kernel's BTF, read once (`None` where the kernel has none).
fn vmlinux() -> Option<&'static [u8]> {
    static V: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    V.get_or_init(|| std::fs::read("/sys/kernel/btf/vmlinux").ok())
        .as_deref()
}

#[test]
fn the_small_blob_reads_as_written() {
    let btf = Btf::parse(small_blob()).unwrap();
    assert_eq!(btf.offset_of("s", "a").unwrap(), 0);
    assert_eq!(
        btf.offset_of("s", "y").unwrap(),
        12,
        "through the anonymous typedef'd member"
    );
    assert_eq!(btf.offset_of("s", "b").unwrap(), 16);
    assert_eq!(btf.offset_of("s", "n.y").unwrap(), 24);
    assert_eq!(btf.offset_of("inner", "y").unwrap(), 4);
    assert!(btf.offset_of("s", "zz").is_err());
    assert!(btf.offset_of("nope", "a").is_err());
    assert_eq!(
        btf.enum_values("e").unwrap(),
        [("A".to_string(), 1), ("B".to_string(), 4)]
    );
    assert_eq!(
        btf.enum_values("e64").unwrap(),
        [("BIG".to_string(), 0x2_0000_0001)]
    );
    assert_eq!(btf.func_id("f"), Some(9));
    assert_eq!(btf.func_id("g"), None);
}

#[test]
fn blobs_that_loop_are_looked_up_without_hanging() {
    let mut b = BlobBuilder::new();
    let m = b.str("m");
    b.ty("loop_t", KIND_TYPEDEF, 0, 1, &[]); // 1: a typedef of itself
    b.ty("s", KIND_STRUCT, 2, 8, &[0, 1, 0, 0, 2, 0]); // 2: anonymous members: loop_t, itself
    b.ty("t", KIND_STRUCT, 1, 8, &[m, 3, 0]); // 3: t.m is a t
    let btf = Btf::parse(b.build()).unwrap();
    assert!(btf.offset_of("s", "x").is_err());
    assert_eq!(btf.offset_of("t", "m.m.m").unwrap(), 0);
    assert!(btf.offset_of("t", "m.x").is_err());
}

#[test]
fn the_kernel_blob_cut_anywhere_is_an_error() {
    let Some(v) = vmlinux() else {
        eprintln!("no /sys/kernel/btf/vmlinux: skipped");
        return;
    };
    assert!(Btf::parse(v.to_vec()).is_ok());
    for len in [0, 1, 23, 24, 25, 4096, v.len() / 2, v.len() - 1] {
        assert!(Btf::parse(v[..len].to_vec()).is_err(), "cut at {len} parsed");
    }
}

/// A blob that keeps a BTF header's magic with arbitrary other fields (small ones, to land
/// inside the blob, or any u32), then arbitrary bytes.
fn headed_bytes() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![0u32..64, 0u32..512, any::<u32>()];
    (vec(field, 5), vec(any::<u8>(), 0..512)).prop_map(|(h, body)| {
        let mut b = vec![0x9f, 0xeb, 1, 0];
        for w in h {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend(body);
        b
    })
}

/// Up to 8 bytes of `blob` overwritten (at `(index, byte)`, indexes taken modulo its length),
/// then cut to `cut` bytes (modulo its length + 1) if given.
fn mutate(mut blob: Vec<u8>, flips: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let len = blob.len();
    for &(i, b) in flips {
        blob[i % len] = b;
    }
    if let Some(c) = cut {
        blob.truncate(c % (len + 1));
    }
    blob
}

proptest! {
    #![proptest_config(config(16000))]

    #[test]
    fn btf_from_random_bytes_never_panics(data in vec(any::<u8>(), 0..256)) {
        if let Ok(btf) = Btf::parse(data) {
            query(&btf);
        }
    }

    #[test]
    fn btf_with_a_header_and_random_fields_never_panics(data in headed_bytes()) {
        if let Ok(btf) = Btf::parse(data) {
            query(&btf);
        }
    }

    #[test]
    fn btf_small_blob_mutated_never_panics(
        flips in vec((any::<usize>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let blob = small_blob();
        let full = blob.len();
        let data = mutate(blob, &flips, cut);
        let (len, flipped) = (data.len(), !flips.is_empty());
        match Btf::parse(data) {
            Ok(btf) => {
                // Cut short and otherwise untouched, it cannot parse: its sections no longer fit.
                prop_assert!(flipped || len == full, "cut to {len} of {full} bytes and parsed");
                query(&btf);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn btf_small_blob_cut_anywhere_is_an_error(cut in any::<usize>()) {
        let blob = small_blob();
        let len = cut % blob.len();
        prop_assert!(Btf::parse(blob[..len].to_vec()).is_err(), "cut to {} bytes", len);
    }
}

proptest! {
    // Each case reads the whole kernel blob (a few MiB): fewer of them.
    #![proptest_config(config(128))]

    #[test]
    fn btf_kernel_blob_mutated_never_panics(
        // Most flips in the header and the first types, some anywhere.
        near in vec((0usize..8192, any::<u8>()), 0..6),
        far in vec((any::<usize>(), any::<u8>()), 0..3),
    ) {
        let Some(v) = vmlinux() else { return Ok(()) };
        let flips: Vec<(usize, u8)> = near.into_iter().chain(far).collect();
        if let Ok(btf) = Btf::parse(mutate(v.to_vec(), &flips, None)) {
            query(&btf);
        }
    }

    #[test]
    fn btf_kernel_types_cut_short_never_panic(cut in 0usize..65536, flips in vec((0usize..65536, any::<u8>()), 0..4)) {
        // The header, the first 64 KiB of types cut at any byte, and the whole string section:
        // the type walk meets a record cut off in the middle.
        let Some(v) = vmlinux() else { return Ok(()) };
        let u32_at = |o: usize| u32::from_le_bytes(v[o..o + 4].try_into().unwrap()) as usize;
        let (hdr, type_off, type_len, str_off, str_len) = (u32_at(4), u32_at(8), u32_at(12), u32_at(16), u32_at(20));
        let types = &v[hdr + type_off..hdr + type_off + type_len.min(cut)];
        let strings = &v[hdr + str_off..hdr + str_off + str_len];
        let mut blob = v[..24].to_vec();
        blob[8..12].copy_from_slice(&0u32.to_le_bytes());
        blob[12..16].copy_from_slice(&(types.len() as u32).to_le_bytes());
        blob[16..20].copy_from_slice(&(types.len() as u32).to_le_bytes());
        blob.extend_from_slice(types);
        blob.extend_from_slice(strings);
        let blob = mutate(blob, &flips, None);
        if let Ok(btf) = Btf::parse(blob) {
            query(&btf);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// /proc/PID/maps

/// One map line's fields, with a path that does not start with whitespace and holds no newline
/// (the kernel escapes `\n` in names as `\012`).
fn map_entry() -> impl Strategy<Value = MapEntry> {
    let path = prop_oneof![
        Just(String::new()),
        "\\[(heap|stack|vdso|vvar|vsyscall|anon:[a-z ]{0,12})\\]",
        "/[^\n\r]{0,40}",
        "/[a-z ]{0,20}( \\(deleted\\))?",
    ];
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        0u32..0x1000,
        0u32..0x10_0000,
        any::<u64>(),
        path,
    )
        .prop_map(|(start, end, file_offset, major, minor, ino, path)| MapEntry {
            start,
            end,
            file_offset,
            dev: major << 20 | minor,
            ino,
            path: MapPath::parse(&path),
            exec: false,
        })
}

/// `e` as the kernel writes it: `start-end perms offset major:minor inode`, padding, name.
fn map_line(e: &MapEntry, perms: &str, pad: usize) -> String {
    let line = format!(
        "{:x}-{:x} {perms} {:08x} {:02x}:{:02x} {}",
        e.start,
        e.end,
        e.file_offset,
        e.dev >> 20,
        e.dev & 0xfffff,
        e.ino
    );
    let name = match &e.path {
        MapPath::Anonymous => String::new(),
        named => named.to_string(),
    };
    format!("{line}{}{}", " ".repeat(pad), name)
}

proptest! {
    #![proptest_config(config(10000))]

    #[test]
    fn maps_any_text_never_panics(text in any::<String>()) {
        let maps = parse_maps(&text);
        prop_assert!(maps.len() <= text.lines().count());
    }

    #[test]
    fn maps_line_shaped_text_never_panics(
        lines in vec("[0-9a-f]{0,17}-?[0-9a-f]{0,17} [-rwxps]{0,5} [0-9a-f]{0,9} [0-9a-f:]{0,6} [0-9]{0,21} {0,30}[^\n]{0,20}", 0..8),
    ) {
        let text = lines.join("\n");
        let maps = parse_maps(&text);
        prop_assert!(maps.len() <= lines.len());
        for m in &maps {
            prop_assert!(!m.path.to_string().starts_with(' '));
        }
    }

    #[test]
    fn maps_lines_read_back_exactly(
        entries in vec((map_entry(), "[r-][w-][x-][ps]", 1usize..40), 0..8),
        junk in vec("[a-z]{0,12}", 0..4),
    ) {
        let mut text = String::new();
        for (i, (e, perms, pad)) in entries.iter().enumerate() {
            // A line of one word here and there: skipped.
            if let Some(j) = junk.get(i) {
                text.push_str(j);
                text.push('\n');
            }
            text.push_str(&map_line(e, perms, *pad));
            text.push('\n');
        }
        let want: Vec<MapEntry> = entries
            .into_iter()
            .map(|(e, perms, _)| MapEntry { exec: perms.contains('x'), ..e })
            .collect();
        prop_assert_eq!(parse_maps(&text), want);
    }
}

// ---------------------------------------------------------------------------------------------
// kpageflags

/// Bits the kernel sets in /proc/kpageflags (0-26 stable, 32-41 exported as they are).
const KERNEL_BITS: u64 = ((1 << 27) - 1) | (((1 << 42) - 1) & !((1 << 32) - 1));

proptest! {
    #![proptest_config(config(10000))]

    #[test]
    fn kpageflags_symbolic_is_one_column_per_flag(flags in any::<u64>(), other in any::<u64>()) {
        let s: Vec<char> = symbolic(flags).chars().collect();
        let letters: Vec<char> = symbolic(u64::MAX).chars().collect();
        prop_assert_eq!(s.len(), symbolic_width());
        prop_assert_eq!(letters.len(), symbolic_width());
        for (i, &c) in s.iter().enumerate() {
            prop_assert!(c == '_' || c == letters[i], "column {} is {:?}", i, c);
        }
        // A column is set in `a | b` when it is set in `a` or in `b`.
        let both: Vec<char> = symbolic(flags | other).chars().collect();
        let o: Vec<char> = symbolic(other).chars().collect();
        for i in 0..s.len() {
            prop_assert_eq!(both[i] != '_', s[i] != '_' || o[i] != '_');
        }
    }

    #[test]
    fn kpageflags_long_names_name_each_bit_once(flags in any::<u64>()) {
        let names = long_names(flags);
        prop_assert_eq!(names.len(), flags.count_ones() as usize);
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(sorted.len(), names.len(), "{:?}", names);
        prop_assert!(names.iter().all(|n| !n.is_empty() && n.is_ascii()));
    }

    #[test]
    fn kpageflags_expand_is_well_formed(flags in any::<u64>(), entry in any::<u64>()) {
        let e = expand(flags, entry);
        // The pagemap entry only adds its own four flags; the PFN or swap offset adds none.
        prop_assert_eq!(e, expand(flags, 0) | expand(0, entry));
        let from_entry = long_names(expand(0, entry));
        prop_assert!(
            from_entry.iter().all(|n| ["softdirty", "file", "swap", "mmap_exclusive"].contains(&n.as_str())),
            "{:?}", from_entry
        );
        prop_assert_eq!(expand(0, entry & pme::PFN_MASK), 0);
        // On what the kernel reports, splitting an overloaded bit moves it: none is lost or made.
        let k = flags & KERNEL_BITS;
        prop_assert_eq!(expand(k, 0).count_ones(), k.count_ones());
    }
}

// ---------------------------------------------------------------------------------------------
// Ring-buffer records

/// A fault record with stacks, its fields and stack words made up from `seed`.
fn fault(seed: u64, ustack_bytes: u16, kstack_bytes: u16) -> FaultEventStacks {
    // SAFETY: FaultEventStacks is plain data (Pod): all-zero bytes are a value.
    let mut s: FaultEventStacks = unsafe { std::mem::zeroed() };
    s.ev.rec = REC_FAULT;
    s.ev.pid = seed as u32;
    s.ev.tid = (seed >> 32) as u32;
    s.ev.addr = seed.rotate_left(7);
    s.ev.ustack_bytes = ustack_bytes;
    s.ev.kstack_bytes = kstack_bytes;
    for i in 0..MAX_STACK {
        s.ustack[i] = seed ^ i as u64;
        s.kstack[i] = !seed ^ i as u64;
    }
    s
}

proptest! {
    #![proptest_config(config(10000))]

    #[test]
    fn records_from_random_bytes_never_panic(
        data in vec(any::<u8>(), 0..size_of::<LateStack>() + 64),
        tag in prop_oneof![
            Just(None),
            Just(Some(REC_FAULT)),
            Just(Some(REC_TASK)),
            Just(Some(REC_MAP)),
            Just(Some(REC_STACK)),
            Just(Some(REC_UNWIND)),
            Just(Some(REC_LATE)),
            any::<u32>().prop_map(Some)
        ],
    ) {
        let mut data = data;
        if let (Some(t), true) = (tag, data.len() >= 4) {
            data[..4].copy_from_slice(&t.to_ne_bytes());
        }
        match decode(&data) {
            Ok(Record::Task(t)) => prop_assert!(t.rec == REC_TASK && data.len() >= size_of::<TaskSeen>()),
            Ok(Record::Fault(ev, stacks)) => {
                prop_assert!(ev.rec == REC_FAULT && data.len() >= size_of::<FaultEvent>());
                if let Some(s) = stacks {
                    prop_assert!(data.len() >= size_of::<FaultEventStacks>());
                    prop_assert!(s.user.len() <= MAX_STACK && s.kernel.len() <= MAX_STACK);
                }
            }
            Ok(Record::Map(m)) => prop_assert!(m.rec == REC_MAP && data.len() >= size_of::<MapSeen>()),
            Ok(Record::Unwind(u)) => prop_assert!(u.rec == REC_UNWIND && data.len() >= size_of::<UnwindNeed>()),
            Ok(Record::Stack { frames, .. }) => {
                prop_assert!(frames.len() <= MAX_STACK);
                prop_assert!(data.len() >= STACK_FRAMES_HEADER + frames.len() * 8);
            }
            Ok(Record::Late(l)) => prop_assert!(l.rec == REC_LATE && data.len() >= size_of::<LateStack>()),
            Err(RecordError::Short { len, need, .. }) => prop_assert!(len == data.len() && len < need),
            Err(RecordError::UnknownTag(t)) => {
                prop_assert!(![REC_FAULT, REC_TASK, REC_MAP, REC_STACK, REC_UNWIND, REC_LATE].contains(&t))
            }
        }
    }

    #[test]
    fn task_records_cut_short_are_errors(pid in any::<u32>(), tid in any::<u32>(), cut in 0usize..32) {
        let t = TaskSeen { rec: REC_TASK, pid, tid, forked_from: pid ^ tid };
        let bytes = bytes_of(&t);
        let data = &bytes[..cut.min(bytes.len())];
        match decode(data) {
            Ok(Record::Task(got)) => {
                prop_assert_eq!(data.len(), size_of::<TaskSeen>());
                prop_assert_eq!((got.pid, got.tid, got.forked_from), (pid, tid, pid ^ tid));
            }
            Ok(other) => prop_assert!(false, "{:?}", other),
            Err(e) => prop_assert!(data.len() < size_of::<TaskSeen>(), "{}", e),
        }
    }

    #[test]
    fn fault_records_cut_short_are_errors_or_have_no_stacks(
        seed in any::<u64>(),
        ustack_bytes in prop_oneof![Just(0u16), 0u16..=(8 * MAX_STACK as u16), any::<u16>()],
        kstack_bytes in prop_oneof![Just(0u16), 0u16..=(8 * MAX_STACK as u16), any::<u16>()],
        cut in 0usize..=size_of::<FaultEventStacks>() + 8,
    ) {
        let s = fault(seed, ustack_bytes, kstack_bytes);
        let full = bytes_of(&s);
        let mut data = full[..cut.min(full.len())].to_vec();
        if cut > full.len() {
            // Longer than the record (the ring buffer rounds up): the tail is ignored.
            data.resize(cut, 0xaa);
        }
        let with_stacks = data.len() >= size_of::<FaultEventStacks>();
        match decode(&data) {
            Ok(Record::Fault(ev, stacks)) => {
                prop_assert!(data.len() >= size_of::<FaultEvent>());
                prop_assert_eq!((ev.pid, ev.tid, ev.addr), (s.ev.pid, s.ev.tid, s.ev.addr));
                match stacks {
                    None => prop_assert!(!with_stacks && ustack_bytes == 0 && kstack_bytes == 0),
                    Some(st) => {
                        prop_assert!(with_stacks);
                        let (nu, nk) = (
                            (ustack_bytes as usize / 8).min(MAX_STACK),
                            (kstack_bytes as usize / 8).min(MAX_STACK),
                        );
                        prop_assert_eq!(&st.user[..], &s.ustack[..nu]);
                        prop_assert_eq!(&st.kernel[..], &s.kstack[..nk]);
                    }
                }
            }
            Ok(other) => prop_assert!(false, "{:?}", other),
            Err(e) => {
                // Too short for the event, or stacks announced and cut off.
                prop_assert!(
                    data.len() < size_of::<FaultEvent>()
                        || (!with_stacks && (ustack_bytes != 0 || kstack_bytes != 0)),
                    "{} ({} bytes)", e, data.len()
                );
            }
        }
    }
}
