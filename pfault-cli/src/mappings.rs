//! Full paths for the mappings the kernel names by device, inode and basename.
//!
//! The programs see a VMA's file as `(dev, ino, dentry basename)`; /proc/PID/maps has the
//! full path. Each process's maps are read when it is first seen and again when an address
//! falls outside them (a new mmap), so paths are known even after it exits.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use pfault_common::*;

use crate::procfs::{cstr, read_maps, MapEntry};

struct ProcMaps {
    entries: Vec<MapEntry>,
    /// /proc/PID/maps could not be read (the process is gone): do not try again.
    gone: bool,
    first_seen: Instant,
}

impl ProcMaps {
    fn read(pid: u32) -> ProcMaps {
        let entries = read_maps(pid);
        ProcMaps {
            gone: entries.is_none(),
            entries: entries.unwrap_or_default(),
            first_seen: Instant::now(),
        }
    }
}

/// A new process keeps mapping libraries for a while after exec; its maps are read again
/// during that time, so frames in them still resolve if it exits before pfault prints.
const NEWBORN: Duration = Duration::from_secs(1);
const YOUNG: Duration = Duration::from_secs(10);
const REFRESH_EVERY: Duration = Duration::from_millis(500);

#[derive(Default)]
pub struct Mappings {
    procs: HashMap<u32, ProcMaps>,
    last_refresh: Option<Instant>,
}

impl Mappings {
    /// Remembers a process's mappings now, while it lives.
    pub fn note_process(&mut self, pid: u32) {
        self.procs.entry(pid).or_insert_with(|| ProcMaps::read(pid));
    }

    /// Reads a process's maps again now (it exec'd, started a thread, or is new): a process
    /// that is gone keeps the map it had, and a fork child already gone gets its parent's,
    /// the layout it was born with.
    pub fn seen(&mut self, t: &TaskSeen) {
        let pid = t.pid;
        let mut fresh = ProcMaps::read(pid);
        if fresh.gone && t.forked_from != 0 {
            self.note_process(t.forked_from);
            fresh.entries = self.procs[&t.forked_from].entries.clone();
        }
        match self.procs.get_mut(&pid) {
            Some(p) if fresh.gone => p.gone = true,
            Some(p) => {
                // It lives after all: a read in the middle of its exec found no maps (a fork
                // notice is often read then), which looks like an exited process.
                p.entries = fresh.entries;
                p.gone = false;
            }
            None => {
                self.procs.insert(pid, fresh);
            }
        }
    }

    /// Re-reads the maps of young processes: on every call (each poll) in their first
    /// second, when a program maps most of what it will, then every `REFRESH_EVERY` until
    /// they are `YOUNG` no more.
    pub fn refresh_young(&mut self) {
        let slow_due = self.last_refresh.is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
        if slow_due {
            self.last_refresh = Some(Instant::now());
        }
        for (pid, p) in self.procs.iter_mut().filter(|(_, p)| !p.gone) {
            let age = p.first_seen.elapsed();
            if age < NEWBORN || slow_due && age < YOUNG {
                // A process that is gone keeps its last map.
                if let Some(entries) = read_maps(*pid) {
                    p.entries = entries;
                }
            }
        }
    }

    /// The mapping of `pid` that holds `addr` (and, when given, is inode `ino`).
    pub fn lookup(&mut self, pid: u32, addr: u64, ino: Option<u64>) -> Option<&MapEntry> {
        self.note_process(pid);
        let p = self.procs.get_mut(&pid)?;
        let find = |entries: &[MapEntry]| {
            entries
                .iter()
                .position(|e| e.start <= addr && addr < e.end && ino.is_none_or(|i| e.ino == i))
        };
        let mut idx = find(&p.entries);
        if idx.is_none() && !p.gone {
            match read_maps(pid) {
                Some(entries) => p.entries = entries,
                None => p.gone = true,
            }
            idx = find(&p.entries);
        }
        idx.map(|i| &p.entries[i])
    }

    /// The path of file `(dev, ino)` as `pid` maps it.
    pub fn path_of(&mut self, pid: u32, dev: u32, ino: u64) -> Option<&str> {
        self.note_process(pid);
        let p = self.procs.get_mut(&pid)?;
        let find = |entries: &[MapEntry]| {
            entries
                .iter()
                .position(|e| e.ino == ino && e.dev == dev && !e.path.is_empty())
        };
        let mut idx = find(&p.entries);
        if idx.is_none() && !p.gone {
            if let Some(entries) = read_maps(pid) {
                p.entries = entries;
            }
            idx = find(&p.entries);
        }
        idx.map(|i| p.entries[i].path.as_str())
    }

    /// A file the kernel named by basename, device and inode: its full path where a process
    /// mapping it is known, else the basename with device and inode.
    pub fn file_name(&mut self, pid: u32, dev: u32, ino: u64, basename: &str) -> String {
        match self.path_of(pid, dev, ino) {
            Some(p) => p.to_string(),
            None => format!("{basename} (dev {}:{} ino {ino})", dev >> 20, dev & 0xfffff),
        }
    }

    /// The name of a mapping counted in the kernel: the file's path (see [`Self::file_name`]),
    /// or `[anon]`/`[heap]`/`[stack]`.
    pub fn counted_name(&mut self, pid: u32, map_kind: u8, dev: u32, ino: u64, basename: &[u8]) -> String {
        if map_kind == MAP_FILE {
            self.file_name(pid, dev, ino, cstr(basename))
        } else {
            anon_label(map_kind).to_string()
        }
    }

    /// How a fault's mapping reads: a full path, `[anon]`, `[heap]`, `[stack]`, or `-` when
    /// no mapping holds the address.
    pub fn describe(&mut self, pid: u32, addr: u64, m: &Mapping) -> String {
        match m.kind {
            MAP_FILE => match self.lookup(pid, addr, Some(m.ino)) {
                Some(e) if !e.path.is_empty() => e.path.clone(),
                _ => self.file_name(pid, m.dev, m.ino, cstr(&m.name)),
            },
            kind => anon_label(kind).into(),
        }
    }
}

/// The name of memory no file backs, as /proc/PID/maps writes it.
pub fn anon_label(map_kind: u8) -> &'static str {
    match map_kind {
        MAP_ANON => "[anon]",
        MAP_HEAP => "[heap]",
        MAP_STACK => "[stack]",
        MAP_NONE => "-",
        _ => "?",
    }
}
