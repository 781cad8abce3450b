//! Stack symbolization with blazesym, each address resolved once per run.
//!
//! User addresses are turned into (binary, file offset) with pfault's own copy of each
//! process's maps, taken while the process lives, and symbolized from the binary: stacks
//! still symbolize after the process has exited (bpftrace prints raw addresses then), and a
//! shared library's frames are resolved once for every process that maps it. A frame that
//! cannot be named still shows its module and file offset. Code a runtime compiled into
//! anonymous memory is named from the perf map it writes ([`crate::perfmap`]).

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    rc::Rc,
};

use blazesym::symbolize::{
    source::{Elf, Kernel, Source},
    Input, Symbolized, Symbolizer,
};
use pfault_common::{
    FileId, FRAME_BY_FP, FRAME_MARK, STOP_BAD_CFA, STOP_BAD_RA, STOP_COPY_END, STOP_REGISTER, STOP_TRUNCATED,
    STOP_UNREADABLE,
};
use serde::Serialize;

use crate::{
    mappings::Mappings,
    perfmap::{PerfMaps, Taken},
    procfs::MapPath,
    records::Record,
};

/// One frame of a stack, as every output format shows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub(crate) struct Frame {
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) addr: u64,
    pub(crate) symbol: Option<String>,
    pub(crate) offset: u64,
    pub(crate) module: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) line: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) inlined: bool,
    /// The GNU build id of the module's file, in hex, for pprof's mappings: read from the
    /// file the process maps, which is not the host's file at its path in a container.
    #[serde(skip)]
    pub(crate) build_id: Option<Rc<str>>,
    /// Reached by a frame-pointer step (the code it was called from had no CFI row): it may
    /// not be that code's caller, and a frame between them may be missing.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) by_fp: bool,
}

impl Frame {
    /// `main+0x99 [anon2mmap]` as bcc prints it; `0x1a2b [libfoo.so+0x1a2b]` when only the
    /// module is known; `[unknown]` when nothing is.
    pub(crate) fn text(&self) -> String {
        let module = self.module.as_deref().map(basename);
        match (&self.symbol, module) {
            (Some(s), Some(m)) if self.inlined => format!("{s} (inlined) [{m}]"),
            (Some(s), Some(m)) => format!("{s}+{:#x} [{m}]", self.offset),
            (Some(s), None) if self.inlined => format!("{s} (inlined)"),
            // A frame that is only a name (`[truncated]`): no code, no offset.
            (Some(s), None) if self.addr == 0 => s.clone(),
            (Some(s), None) => format!("{s}+{:#x}", self.offset),
            (None, Some(m)) => format!("{:#x} [{m}+{:#x}]", self.addr, self.offset),
            (None, None) => format!("{:#x} [unknown]", self.addr),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Frame {
    /// A frame that is only a name: what stands where no stack could be walked.
    pub(crate) fn named(what: &str) -> Frame {
        Frame {
            addr: 0,
            symbol: Some(what.to_string()),
            offset: 0,
            module: None,
            file: None,
            line: None,
            inlined: false,
            build_id: None,
            by_fp: false,
        }
    }

    /// The frame as counted output prints it: by function (its address, offset and line left
    /// out, so that faults anywhere in one function add up), or whole with `addresses`. A
    /// frame no symbol names keeps its offset in its module: that is its name.
    pub(crate) fn printed(self, addresses: bool) -> Frame {
        if addresses {
            return self;
        }
        Frame {
            addr: 0,
            offset: if self.symbol.is_some() { 0 } else { self.offset },
            line: None,
            by_fp: false,
            ..self
        }
    }

    /// A counted stack's line: `touch_pages [anon_writer]`; with `addresses`, the address
    /// and [`Self::text`], as bcc's -v prints.
    pub(crate) fn label(&self, addresses: bool) -> String {
        if addresses {
            let fp = if self.by_fp { " (by frame pointer)" } else { "" };
            return format!("{:#018x} {}{fp}", self.addr, self.text());
        }
        match (&self.symbol, self.module.as_deref().map(basename)) {
            (Some(s), Some(m)) if self.inlined => format!("{s} (inlined) [{m}]"),
            (Some(s), Some(m)) => format!("{s} [{m}]"),
            (Some(s), None) if self.inlined => format!("{s} (inlined)"),
            (Some(s), None) => s.clone(),
            (None, _) => self.name(),
        }
    }

    /// The name used in folded stacks and flame graphs.
    pub(crate) fn name(&self) -> String {
        match (&self.symbol, &self.module) {
            (Some(s), _) => s.clone(),
            (None, Some(m)) => format!("{}+{:#x}", basename(m), self.offset),
            (None, None) => "[unknown]".into(),
        }
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

pub(crate) struct Symbols {
    /// Binaries' symbols, started afresh past [`MAX_OPENED`] files.
    symbolizer: Symbolizer,
    /// The kernel's, kept: parsed once (tens of MiB at a time).
    kernel: Symbolizer,
    /// User frames by (binary, file offset): shared by every process mapping that binary,
    /// and independent of the process still being alive. A binary is its device and inode as
    /// the kernel names it, not its path (a container's /usr/lib/libc.so.6 is not the
    /// host's). Kernel frames by ([`KERNEL`], address).
    cache: HashMap<(FileId, u64), Rc<[Frame]>>,
    /// The files the symbolizer holds parsed.
    opened: HashSet<PathBuf>,
    /// Each binary's build id, read once.
    build_ids: HashMap<FileId, Option<Rc<str>>>,
    pub(crate) maps: Mappings,
    /// Names of JIT-compiled code, by process.
    jit: PerfMaps,
}

/// The most files the symbolizer holds parsed (a few MiB each with debug information); past
/// it, it starts afresh. Frames are cached above it, so a file is parsed again only for
/// offsets not yet named, and a host running many distinct binaries (or the same one in many
/// containers, seen under each process's root) does not keep every one of them parsed.
const MAX_OPENED: usize = 32;

fn symbolizer() -> Symbolizer {
    // No auto-reload: it stats every file per lookup, several times the lookup itself.
    Symbolizer::builder().enable_auto_reload(false).build()
}

impl Default for Symbols {
    fn default() -> Self {
        Symbols {
            symbolizer: symbolizer(),
            kernel: symbolizer(),
            cache: HashMap::new(),
            opened: HashSet::new(),
            build_ids: HashMap::new(),
            maps: Mappings::default(),
            jit: PerfMaps::default(),
        }
    }
}

/// The key of kernel frames in the cache: no file has inode 0.
const KERNEL: FileId = FileId {
    ino: 0,
    dev: 0,
    _pad: 0,
};

/// Where a user address lies: the mapped binary and the offset in it.
#[derive(Clone, Debug)]
struct Located {
    /// The mapping's name ([vdso], a file's path or basename); empty for anonymous memory.
    path: Rc<str>,
    /// A file by its full path: one to symbolize.
    file: Option<FileId>,
    file_offset: u64,
}

/// A user frame placed in its file by the process's maps at the time: named later, it stays
/// right after the process maps something else there or execs another program.
#[derive(Clone, Debug)]
pub(crate) struct Placed {
    addr: u64,
    /// The address looked up: a return address less one.
    pc: u64,
    at: Option<Located>,
    /// What the process's perf map said when the stack arrived.
    taken: Taken,
    /// Reached by a frame-pointer step (`FRAME_BY_FP`).
    by_fp: bool,
    /// Not a frame: the marker ending a walk cut short (`STOP_*`).
    stop: Option<u64>,
}

impl Located {
    /// Memory no file backs (or a mapping named with `PR_SET_VMA_ANON_NAME`): where a JIT
    /// writes code.
    fn anonymous(&self) -> bool {
        self.file.is_none() && (self.path.is_empty() || self.path.starts_with("[anon:"))
    }
}

impl Symbols {
    /// Remembers a process's mappings and where its perf map lies while it lives, so its
    /// stacks symbolize after it exits.
    pub(crate) fn note_process(&mut self, pid: u32) {
        self.maps.note_process(pid);
        self.jit.note_process(pid);
    }

    /// Drops what is known of a process that is gone, once nothing will ask for it.
    pub(crate) fn forget(&mut self, pid: u32) {
        self.maps.forget(pid);
        self.jit.forget(pid);
    }

    /// Keeps what is known of the processes `keep` says may still be asked about.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u32) -> bool) {
        self.maps.retain(&mut keep);
        self.jit.retain(keep);
    }

    /// A process is new, exec'd, started a thread or mapped a file: note its maps while it
    /// lives.
    pub(crate) fn notice(&mut self, record: &Record) {
        self.maps.notice(record);
        // A new program (or process) has a perf map of its own, and may have been given
        // another /tmp before its exec (a container's runtime mounts one, then execs).
        if let Record::Task(t) = record {
            if t.tid == t.pid {
                self.jit.relocate(t.pid);
            }
        }
    }

    /// A user stack of `pid`'s arrived: what it ran is what its perf map says by now.
    pub(crate) fn arrived(&mut self, pid: u32) -> Taken {
        self.jit.arrived(pid)
    }

    /// Symbolizes a user stack (leaf first) that arrived at `taken`, by the process's maps
    /// now.
    pub(crate) fn user(&mut self, pid: u32, stack: &[u64], taken: Taken) -> Vec<Frame> {
        let placed = self.place(pid, stack, taken);
        self.name(pid, &placed)
    }

    /// Places a user stack's frames (leaf first) in their files by the process's maps now.
    /// Return addresses point after the call, so every frame but the leaf is looked up one
    /// byte earlier.
    pub(crate) fn place(&mut self, pid: u32, stack: &[u64], taken: Taken) -> Vec<Placed> {
        until_null(stack)
            .iter()
            .enumerate()
            .map(|(i, &raw)| {
                let stop = (raw & FRAME_MARK != 0).then_some(raw & !FRAME_MARK);
                let addr = if stop.is_some() { 0 } else { raw & !FRAME_BY_FP };
                let a = if i == 0 { addr } else { addr.saturating_sub(1) };
                let at = self.maps.lookup(pid, a, None).map(|e| Located {
                    path: match &e.path {
                        MapPath::Anonymous => "".into(),
                        named => named.to_string().into(),
                    },
                    file: e.path.file().map(|_| e.file_id()),
                    file_offset: a - e.start + e.file_offset,
                });
                Placed {
                    addr,
                    pc: a,
                    at: at.filter(|_| stop.is_none()),
                    taken,
                    by_fp: raw & FRAME_BY_FP != 0,
                    stop,
                }
            })
            .collect()
    }

    /// Names placed frames: each file's new offsets in one symbolizer call, each offset once.
    /// `pid` is the process they were placed in, whose root holds files the host lacks.
    pub(crate) fn name(&mut self, pid: u32, placed: &[Placed]) -> Vec<Frame> {
        let mut todo: HashMap<FileId, (Rc<str>, Vec<u64>)> = HashMap::new();
        for l in placed.iter().filter_map(|p| p.at.as_ref()) {
            if let Some(id) = l.file {
                if !self.cache.contains_key(&(id, l.file_offset)) {
                    let file = todo.entry(id).or_insert_with(|| (l.path.clone(), Vec::new()));
                    file.1.push(l.file_offset);
                }
            }
        }
        for (id, (path, mut offsets)) in todo {
            offsets.sort_unstable();
            offsets.dedup();
            self.resolve_elf(pid, id, &path, &offsets);
        }
        let mut out = Vec::with_capacity(placed.len());
        for &Placed {
            addr,
            pc,
            at: ref l,
            taken,
            by_fp,
            stop,
        } in placed
        {
            if let Some(why) = stop {
                out.push(Frame::named(stop_name(why)));
                continue;
            }
            let cached = l.as_ref().and_then(|l| self.cache.get(&(l.file?, l.file_offset)));
            // An address no mapping known holds may be code compiled since.
            let jit_code = cached.is_none() && l.as_ref().is_none_or(Located::anonymous);
            let jit = if jit_code {
                self.jit.name(pid, pc, taken)
            } else {
                None
            };
            match (cached, jit) {
                (Some(frames), _) => out.extend(frames.iter().map(|f| Frame {
                    addr,
                    by_fp,
                    ..f.clone()
                })),
                (None, Some(j)) => out.push(Frame {
                    addr,
                    symbol: Some(j.name.to_string()),
                    offset: j.offset,
                    module: Some(j.map.to_string()),
                    file: None,
                    line: None,
                    inlined: false,
                    build_id: None,
                    by_fp,
                }),
                (None, None) => out.push(Frame {
                    addr,
                    symbol: None,
                    offset: l.as_ref().map(|l| l.file_offset).unwrap_or(0),
                    module: l.as_ref().map(|l| l.path.to_string()).filter(|p| !p.is_empty()),
                    file: None,
                    line: None,
                    inlined: false,
                    build_id: None,
                    by_fp,
                }),
            }
        }
        out
    }

    pub(crate) fn kernel(&mut self, stack: &[u64]) -> Vec<Frame> {
        let stack = until_null(stack);
        let missing: Vec<u64> = stack
            .iter()
            .copied()
            .filter(|a| !self.cache.contains_key(&(KERNEL, *a)))
            .collect();
        if !missing.is_empty() {
            let results = self
                .kernel
                .symbolize(&Source::Kernel(Kernel::default()), Input::AbsAddr(&missing))
                .unwrap_or_default();
            for (i, &addr) in missing.iter().enumerate() {
                self.cache
                    .insert((KERNEL, addr), frames_of(results.get(i), addr, None, None).into());
            }
        }
        let frames = stack
            .iter()
            .flat_map(|a| self.cache[&(KERNEL, *a)].iter().cloned());
        // An fexit program's stack starts in the program and its trampoline: not the fault's.
        frames
            .skip_while(|f| {
                f.symbol
                    .as_deref()
                    .is_some_and(|s| s.starts_with("bpf_prog_") || s.starts_with("bpf_trampoline_"))
            })
            .collect()
    }

    /// Names `offsets` in file `id`, which `pid` maps as `path`. The file is read as the
    /// process sees it, never from the host's file at the same path: one that cannot be read
    /// leaves its frames named by module and offset.
    fn resolve_elf(&mut self, pid: u32, id: FileId, path: &str, offsets: &[u64]) {
        let Some(file) = self.maps.source(pid, id, path) else {
            for &off in offsets {
                let frames = frames_of(None, off, Some(path), None);
                self.cache.insert((id, off), frames.into());
            }
            return;
        };
        let build_id = self
            .build_ids
            .entry(id)
            .or_insert_with(|| build_id(&file))
            .clone();
        if !self.opened.contains(&file) {
            if self.opened.len() >= MAX_OPENED {
                self.symbolizer = symbolizer();
                self.opened.clear();
            }
            self.opened.insert(file.clone());
        }
        let results = self
            .symbolizer
            .symbolize(&Source::Elf(Elf::new(file)), Input::FileOffset(offsets))
            .unwrap_or_default();
        for (i, &off) in offsets.iter().enumerate() {
            let frames = frames_of(results.get(i), off, Some(path), build_id.clone());
            self.cache.insert((id, off), frames.into());
        }
    }
}

/// The frame that ends a user stack cut short, as every output shows it (`STOP_*`).
fn stop_name(why: u64) -> &'static str {
    match why {
        STOP_TRUNCATED => "[truncated]",
        STOP_REGISTER => "[unwind stopped: CFA in a register not known]",
        STOP_UNREADABLE => "[unwind stopped: stack unreadable]",
        STOP_BAD_CFA => "[unwind stopped: bad frame]",
        STOP_BAD_RA => "[unwind stopped: bad return address]",
        STOP_COPY_END => "[unwind stopped: past the stack copied]",
        _ => "[unwind stopped]",
    }
}

fn until_null(stack: &[u64]) -> &[u64] {
    // A frame-pointer walk ends on a null return address.
    &stack[..stack.iter().position(|&a| a == 0).unwrap_or(stack.len())]
}

/// The GNU build id of an ELF file, in hex.
fn build_id(path: &std::path::Path) -> Option<Rc<str>> {
    use object::Object as _;
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: read only; a file truncated under us could fault, as for any reader of a mapped
    // binary.
    let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let id = object::File::parse(&*data).ok()?.build_id().ok()??;
    Some(id.iter().map(|b| format!("{b:02x}")).collect::<String>().into())
}

/// Frames for one symbolized address: inlined callees first (leaf first), then the function.
fn frames_of(
    result: Option<&Symbolized>,
    addr: u64,
    module: Option<&str>,
    build_id: Option<Rc<str>>,
) -> Vec<Frame> {
    let Some(Symbolized::Sym(sym)) = result else {
        return vec![Frame {
            addr,
            symbol: None,
            offset: addr,
            module: module.map(String::from),
            file: None,
            line: None,
            inlined: false,
            build_id,
            by_fp: false,
        }];
    };
    let module = module.map(String::from);
    let code = sym.code_info.as_deref();
    let mut frames: Vec<Frame> = sym
        .inlined
        .iter()
        .rev()
        .map(|f| Frame {
            addr,
            symbol: Some(f.name.to_string()),
            offset: 0,
            module: module.clone(),
            file: f
                .code_info
                .as_ref()
                .map(|c| c.file.to_string_lossy().into_owned()),
            line: f.code_info.as_ref().and_then(|c| c.line),
            inlined: true,
            build_id: build_id.clone(),
            by_fp: false,
        })
        .collect();
    frames.push(Frame {
        addr,
        symbol: Some(sym.name.to_string()),
        offset: sym.offset as u64,
        module,
        file: code.map(|c| c.file.to_string_lossy().into_owned()),
        line: code.and_then(|c| c.line),
        inlined: false,
        build_id,
        by_fp: false,
    });
    frames
}
