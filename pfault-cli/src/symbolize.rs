//! Stack symbolization with blazesym, each address resolved once per run.
//!
//! A process's memory map is cached the first time it is seen, so its stacks still
//! symbolize after it has exited (bpftrace prints raw addresses then). A frame blazesym
//! cannot name still shows its module and file offset, from pfault's own copy of the maps.

use std::{collections::HashMap, rc::Rc};

use blazesym::symbolize::{
    cache,
    source::{Kernel, Process, Source},
    Input, Symbolized, Symbolizer,
};
use serde::Serialize;

use crate::mappings::Mappings;

/// One frame of a stack, as every output format shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Frame {
    pub addr: u64,
    pub symbol: Option<String>,
    pub offset: u64,
    pub module: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inlined: bool,
}

impl Frame {
    /// `main+0x99 [anon2mmap]` as bcc prints it; `0x1a2b [libfoo.so+0x1a2b]` when only the
    /// module is known; `[unknown]` when nothing is.
    pub fn text(&self) -> String {
        let module = self.module.as_deref().map(basename);
        match (&self.symbol, module) {
            (Some(s), Some(m)) if self.inlined => format!("{s} (inlined) [{m}]"),
            (Some(s), Some(m)) => format!("{s}+{:#x} [{m}]", self.offset),
            (Some(s), None) if self.inlined => format!("{s} (inlined)"),
            (Some(s), None) => format!("{s}+{:#x}", self.offset),
            (None, Some(m)) => format!("{:#x} [{m}+{:#x}]", self.addr, self.offset),
            (None, None) => format!("{:#x} [unknown]", self.addr),
        }
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

pub struct Symbols {
    symbolizer: Symbolizer,
    /// Frames by (pid, address); pid 0 is the kernel.
    cache: HashMap<(u32, u64), Rc<[Frame]>>,
    pub maps: Mappings,
    cached_procs: HashMap<u32, bool>,
}

impl Default for Symbols {
    fn default() -> Self {
        Symbols {
            // No auto-reload: it stats every file per lookup (5-9 us instead of about 1 us).
            symbolizer: Symbolizer::builder().enable_auto_reload(false).build(),
            cache: HashMap::new(),
            maps: Mappings::default(),
            cached_procs: HashMap::new(),
        }
    }
}

impl Symbols {
    /// Caches a process's memory map while it lives, for symbolizing after it exits.
    pub fn note_process(&mut self, pid: u32) {
        if self.cached_procs.contains_key(&pid) {
            return;
        }
        let ok = self
            .symbolizer
            .cache(&cache::Cache::from(cache::Process::new(pid.into())))
            .is_ok();
        self.cached_procs.insert(pid, ok);
        self.maps.note_process(pid);
    }

    /// Symbolizes a user stack (leaf first). Return addresses point after the call, so every
    /// frame but the leaf is looked up one byte earlier.
    pub fn user(&mut self, pid: u32, stack: &[u64]) -> Vec<Frame> {
        self.note_process(pid);
        self.stack(pid, stack)
    }

    pub fn kernel(&mut self, stack: &[u64]) -> Vec<Frame> {
        self.stack(0, stack)
    }

    fn stack(&mut self, pid: u32, stack: &[u64]) -> Vec<Frame> {
        // A frame-pointer walk ends on a null return address.
        let stack = &stack[..stack.iter().position(|&a| a == 0).unwrap_or(stack.len())];
        let lookups: Vec<u64> = stack
            .iter()
            .enumerate()
            .map(|(i, &a)| if i == 0 { a } else { a.saturating_sub(1) })
            .collect();
        let missing: Vec<u64> = lookups
            .iter()
            .copied()
            .filter(|a| !self.cache.contains_key(&(pid, *a)))
            .collect();
        if !missing.is_empty() {
            self.resolve(pid, &missing);
        }
        let mut out = Vec::with_capacity(stack.len());
        for (&orig, a) in stack.iter().zip(&lookups) {
            for f in self.cache[&(pid, *a)].iter() {
                let mut f = f.clone();
                f.addr = orig;
                out.push(f);
            }
        }
        out
    }

    fn resolve(&mut self, pid: u32, addrs: &[u64]) {
        let source = if pid == 0 {
            Source::Kernel(Kernel::default())
        } else {
            let mut p = Process::new(pid.into());
            // Once the process is gone, its cached map is all there is.
            p.map_files = std::path::Path::new(&format!("/proc/{pid}")).exists();
            Source::Process(p)
        };
        let results = self
            .symbolizer
            .symbolize(&source, Input::AbsAddr(addrs))
            .unwrap_or_default();
        for (i, &addr) in addrs.iter().enumerate() {
            let frames: Vec<Frame> = match results.get(i) {
                Some(Symbolized::Sym(sym)) => {
                    let code = sym.code_info.as_deref();
                    // blazesym names the file the symbols came from (maybe a separate debug
                    // file); people want the mapped binary.
                    let mapped = if pid == 0 {
                        None
                    } else {
                        self.maps.lookup(pid, addr, None).map(|e| e.path.clone())
                    };
                    let module = mapped
                        .filter(|p| !p.is_empty())
                        .or_else(|| sym.module.as_ref().map(|m| m.to_string_lossy().into_owned()));
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
                    });
                    frames
                }
                _ => {
                    let entry = if pid == 0 {
                        None
                    } else {
                        self.maps.lookup(pid, addr, None)
                    };
                    vec![Frame {
                        addr,
                        symbol: None,
                        offset: entry.map(|e| addr - e.start + e.file_offset).unwrap_or(0),
                        module: entry.map(|e| e.path.clone()).filter(|p| !p.is_empty()),
                        file: None,
                        line: None,
                        inlined: false,
                    }]
                }
            };
            self.cache.insert((pid, addr), frames.into());
        }
    }
}
