//! Names for code a runtime compiled into anonymous memory, from the perf map it writes:
//! `/tmp/perf-PID.map`, a line per function, `START SIZE name` (hex, without 0x), as perf's
//! jit-interface.txt defines it. Node writes one with `--perf-basic-prof`, CPython 3.12+ with
//! `-X perf`, the JVM through perf-map-agent, .NET with `DOTNET_PerfMapEnabled`.
//!
//! The file is the process's: under its own root (a container's /tmp is not the host's) and
//! named by the pid it knows itself by (its pid namespace's). Both are found while it lives;
//! a container's /tmp is held open, and the file once it exists, so that its frames are
//! named after it exits and its root (a tmpfs on its /tmp) is gone with it. That /tmp is
//! found when pfault reads the process's exec notice: a container's process gone before
//! then (a few ms long, on a host that starves pfault) has its map looked for in ours.
//! Runtimes append to the map as they compile, some through a buffer written out at exit:
//! it is read on, from where the last read stopped, as stacks arrive and whenever a frame is
//! not in what was read, and what was read is kept (a map deleted at exit still names).
//!
//! A runtime reuses the memory of code it dropped (V8 does within a second), so two functions
//! of a map may hold one address. A stack is named by the newest of them written by the time
//! it arrived, or else by the first written after: the function of the time of its fault.

use std::{
    collections::HashMap,
    fs::File,
    io::{Read, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    rc::{Rc, Weak},
    time::{Duration, Instant},
};

use crate::procfs;

/// One function of a perf map.
#[derive(Clone, Debug, PartialEq, Eq)]
struct JitSym {
    start: u64,
    size: u64,
    name: Rc<str>,
    /// Its place among the functions the process's maps listed, in the order written.
    seq: u64,
}

/// How many functions of a process's perf map had been read when a stack arrived: names
/// written later are for code that may have been compiled since, over the stack's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Taken(u64);

/// A named address: the function, the address's offset in it, and the map that named it as
/// the process knows it (`/tmp/perf-PID.map`), which stands for the module.
pub(crate) struct JitName {
    pub(crate) name: Rc<str>,
    pub(crate) offset: u64,
    pub(crate) map: Rc<str>,
}

/// A line of a perf map; `None` for one that is not `START SIZE name` (perf skips those too).
fn parse_line(line: &str) -> Option<JitSym> {
    let line = line.trim_start();
    let (start, rest) = line.split_once(|c: char| c.is_ascii_whitespace())?;
    let (size, name) = rest.trim_start().split_once(|c: char| c.is_ascii_whitespace())?;
    let hex = |s: &str| u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok();
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    Some(JitSym {
        start: hex(start)?,
        size: hex(size)?,
        name: name.into(),
        seq: 0,
    })
}

/// What was read of one process's perf map.
struct PerfMap {
    /// The map's path as the process writes it, named by its own pid.
    shown: Rc<str>,
    /// The same file as this process reaches it.
    path: PathBuf,
    /// The process's /tmp, held open when it is not ours: `path` goes through it.
    _tmp: Option<Rc<File>>,
    /// The file, once it was found: read through after the process and its root are gone.
    file: Option<File>,
    /// Bytes taken from the file, up to the end of its last whole line.
    taken: u64,
    /// Functions by start.
    syms: Vec<JitSym>,
    /// Functions read so far, the ones dropped by a file written afresh included.
    read: u64,
    /// The largest function: how far below an address a function holding it may start.
    largest: u64,
    /// When the file was last read on (or looked for).
    looked_at: Option<Instant>,
}

/// The map is read on at most this often: a stream of stacks, or code no map names (a JIT
/// writing none), must not cost a read each.
const READ_EVERY: Duration = Duration::from_millis(20);

/// A process without a perf map is looked for one at most this often as its stacks arrive
/// (most processes have none).
const LOOK_EVERY: Duration = Duration::from_secs(1);

impl PerfMap {
    /// Finds `pid`'s map while the process lives; one already gone is taken to have shared
    /// this host's /tmp and pid namespace.
    fn locate(pid: u32, dirs: &mut TmpDirs) -> PerfMap {
        let own_pid = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| procfs::ns_tgid(&s))
            .unwrap_or(pid);
        let shown = format!("/tmp/perf-{own_pid}.map");
        let name = format!("perf-{own_pid}.map");
        let its_tmp = format!("/proc/{pid}/root/tmp");
        let (path, tmp) = match dirs.of(&its_tmp) {
            Tmp::Ours => (PathBuf::from(&shown), None),
            Tmp::Held(dir) => (held_path(&dir).join(name), Some(dir)),
            Tmp::Theirs => (Path::new(&its_tmp).join(name), None),
        };
        let mut map = PerfMap::new(shown.into(), path, tmp);
        map.open();
        map
    }

    /// The map named `shown`, at `path` (through `tmp`), nothing read yet.
    fn new(shown: Rc<str>, path: PathBuf, tmp: Option<Rc<File>>) -> PerfMap {
        PerfMap {
            shown,
            path,
            _tmp: tmp,
            file: None,
            taken: 0,
            syms: Vec::new(),
            read: 0,
            largest: 0,
            looked_at: None,
        }
    }

    /// Reads on, unless it was done within `READ_EVERY` (or, while no file is found,
    /// within `look_every`).
    fn read_on_now_and_then(&mut self, look_every: Duration) {
        let every = if self.file.is_some() {
            READ_EVERY
        } else {
            look_every
        };
        if self.looked_at.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.looked_at = Some(Instant::now());
        self.read_on();
    }

    fn open(&mut self) {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
    }

    /// Takes in the lines written since the last read. A file shorter than what was taken
    /// was written afresh (the pid exec'd another runtime): it is read from its start.
    fn read_on(&mut self) {
        self.open();
        let Some(file) = &mut self.file else { return };
        let Ok(len) = file.metadata().map(|m| m.len()) else {
            return;
        };
        if len < self.taken {
            self.taken = 0;
            self.syms.clear();
            self.largest = 0;
        }
        if len == self.taken || file.seek(SeekFrom::Start(self.taken)).is_err() {
            return;
        }
        let mut new = Vec::new();
        if file.read_to_end(&mut new).is_err() {
            return;
        }
        // A line still being written is taken with the next read.
        let Some(end) = new.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        self.taken += end as u64 + 1;
        let text = String::from_utf8_lossy(&new[..end]);
        for mut sym in text.lines().filter_map(parse_line) {
            sym.seq = self.read;
            self.read += 1;
            self.largest = self.largest.max(sym.size);
            self.syms.push(sym);
        }
        self.syms.sort_by_key(|s| s.start);
    }

    /// The function holding `addr` for a stack that arrived when `taken` functions were
    /// read: the newest of those written by then, or else the first written after.
    fn find(&self, addr: u64, taken: Taken) -> Option<JitName> {
        let below = self.syms.partition_point(|s| s.start <= addr);
        let holding = self.syms[..below]
            .iter()
            .rev()
            .take_while(|s| addr - s.start < self.largest)
            .filter(|s| addr - s.start < s.size);
        let (mut before, mut after): (Option<&JitSym>, Option<&JitSym>) = (None, None);
        for s in holding {
            if s.seq < taken.0 {
                before = before.filter(|b| b.seq > s.seq).or(Some(s));
            } else {
                after = after.filter(|a| a.seq < s.seq).or(Some(s));
            }
        }
        let s = before.or(after)?;
        Some(JitName {
            name: s.name.clone(),
            offset: addr - s.start,
            map: self.shown.clone(),
        })
    }
}

/// A directory held open, as a path that opens what it holds.
fn held_path(dir: &File) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
}

/// Where a process's /tmp is.
enum Tmp {
    /// Ours (or the process is gone, and ours is the one guess left).
    Ours,
    /// Another (a container's), held open.
    Held(Rc<File>),
    /// Another, reached through the process's root while it lives: more are held open
    /// than `MAX_HELD`.
    Theirs,
}

/// The most /tmp directories of containers held open. One serves every process of a
/// container; past this many, a container's process is read only while it lives.
const MAX_HELD: usize = 256;

/// The /tmp directories of processes whose /tmp is not ours, held open while one of them
/// may still be asked about: its perf map is read through it after the process, its mount
/// namespace and a tmpfs mounted there are gone.
#[derive(Default)]
struct TmpDirs {
    /// Ours, by device and inode.
    ours: Option<(u64, u64)>,
    held: HashMap<(u64, u64), Weak<File>>,
}

impl TmpDirs {
    fn of(&mut self, its_tmp: &str) -> Tmp {
        let ours = *self.ours.get_or_insert_with(|| {
            std::fs::metadata("/tmp")
                .map(|m| (m.dev(), m.ino()))
                .unwrap_or_default()
        });
        let Ok(dir) = File::open(its_tmp) else {
            return Tmp::Ours;
        };
        let Ok(id) = dir.metadata().map(|m| (m.dev(), m.ino())) else {
            return Tmp::Ours;
        };
        if id == ours {
            return Tmp::Ours;
        }
        if let Some(held) = self.held.get(&id).and_then(Weak::upgrade) {
            return Tmp::Held(held);
        }
        self.held.retain(|_, d| d.strong_count() > 0);
        if self.held.len() >= MAX_HELD {
            return Tmp::Theirs;
        }
        let dir = Rc::new(dir);
        self.held.insert(id, Rc::downgrade(&dir));
        Tmp::Held(dir)
    }
}

/// The perf maps of the processes seen.
#[derive(Default)]
pub(crate) struct PerfMaps {
    procs: HashMap<u32, PerfMap>,
    tmp: TmpDirs,
}

impl PerfMaps {
    /// Finds `pid`'s map now, while it lives, if not done yet.
    pub(crate) fn note_process(&mut self, pid: u32) {
        if !self.procs.contains_key(&pid) {
            let map = PerfMap::locate(pid, &mut self.tmp);
            self.procs.insert(pid, map);
        }
    }

    /// Finds `pid`'s map afresh: it exec'd.
    pub(crate) fn relocate(&mut self, pid: u32) {
        let map = PerfMap::locate(pid, &mut self.tmp);
        self.procs.insert(pid, map);
    }

    /// A stack of `pid`'s arrived: what its map says by now is what it ran.
    pub(crate) fn arrived(&mut self, pid: u32) -> Taken {
        self.note_process(pid);
        let map = self.procs.get_mut(&pid).expect("noted above");
        map.read_on_now_and_then(LOOK_EVERY);
        Taken(map.read)
    }

    /// Names an address of `pid`'s code that no file backs, from its perf map, for a stack
    /// that arrived at `taken`.
    pub(crate) fn name(&mut self, pid: u32, addr: u64, taken: Taken) -> Option<JitName> {
        self.note_process(pid);
        let map = self.procs.get_mut(&pid).expect("noted above");
        if let Some(n) = map.find(addr, taken) {
            return Some(n);
        }
        // A frame to name looks as often as it reads: the map may be written at exit.
        map.read_on_now_and_then(READ_EVERY);
        map.find(addr, taken)
    }

    /// Drops a process's map (and closes its file), once nothing will ask for it.
    pub(crate) fn forget(&mut self, pid: u32) {
        self.procs.remove(&pid);
    }

    /// Keeps the maps of the processes `keep` says may still be asked about.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u32) -> bool) {
        self.procs.retain(|&pid, _| keep(pid));
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn sym(start: u64, size: u64, name: &str) -> JitSym {
        JitSym {
            start,
            size,
            name: name.into(),
            seq: 0,
        }
    }

    #[test]
    fn a_line_is_start_size_and_the_rest_as_the_name() {
        assert_eq!(
            parse_line("7f4d2dfc5b80 1f4 JS:*touch /tmp/x.js:2:28"),
            Some(sym(0x7f4d2dfc5b80, 0x1f4, "JS:*touch /tmp/x.js:2:28"))
        );
        assert_eq!(
            parse_line("0x7f12 b py::f:<frozen importlib._bootstrap>\r"),
            Some(sym(0x7f12, 0xb, "py::f:<frozen importlib._bootstrap>"))
        );
    }

    #[test]
    fn lines_that_are_not_functions_are_skipped() {
        for bad in ["", "123", "1234 5", "1234 5   ", "xyz 5 f", "1234 zz f"] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }

    /// A path of its own for each test's map.
    fn scratch(test: &str) -> PathBuf {
        std::env::temp_dir().join(format!("pfault-perfmap-{test}-{}", std::process::id()))
    }

    /// A map read from `text`, through a file deleted once read.
    fn map_of(test: &str, text: &str) -> PerfMap {
        let path = scratch(test);
        let mut m = PerfMap::new("/tmp/perf-1.map".into(), path.clone(), None);
        std::fs::write(&path, text).unwrap();
        m.read_on();
        std::fs::remove_file(&path).unwrap();
        m
    }

    fn name(m: &PerfMap, addr: u64, taken: u64) -> Option<(String, u64)> {
        m.find(addr, Taken(taken)).map(|n| (n.name.to_string(), n.offset))
    }

    #[test]
    fn an_address_is_named_by_the_function_holding_it() {
        let m = map_of("named", "1000 100 big\n1010 10 small\n2000 8 b\n");
        assert_eq!(name(&m, 0x1028, 3), Some(("big".into(), 0x28)));
        assert_eq!(name(&m, 0x1014, 3), Some(("small".into(), 4)));
        assert_eq!(name(&m, 0x2007, 3), Some(("b".into(), 7)));
        assert_eq!(name(&m, 0x2008, 3), None);
        assert_eq!(name(&m, 0xfff, 3), None);
        assert_eq!(m.find(0x2000, Taken(3)).unwrap().map.as_ref(), "/tmp/perf-1.map");
    }

    #[test]
    fn reused_code_is_named_by_the_function_there_when_the_stack_arrived() {
        // V8 put an optimized function at 0x42c0, dropped it, and put `log` there.
        let m = map_of("reused", "42c0 32c JS:*touch\n4000 100 other\n42c0 378 JS:~log\n");
        // Arrived after the first two were read: the newest written by then.
        assert_eq!(name(&m, 0x4300, 2), Some(("JS:*touch".into(), 0x40)));
        // After all three: the newest.
        assert_eq!(name(&m, 0x4300, 3), Some(("JS:~log".into(), 0x40)));
        // Before any was read (the map not found yet): the first written after.
        assert_eq!(name(&m, 0x4300, 0), Some(("JS:*touch".into(), 0x40)));
        // Only `log` reaches this far.
        assert_eq!(name(&m, 0x4600, 2), Some(("JS:~log".into(), 0x340)));
    }

    #[test]
    fn the_file_is_read_on_as_it_grows_a_line_at_a_time_and_kept_once_deleted() {
        let path = scratch("grows");
        let mut w = File::create(&path).unwrap();
        let mut m = map_of("grows-empty", "");
        (m.path, m.file) = (path.clone(), None);
        // A line cut short (a runtime's buffer written out half-way) waits for its end.
        write!(w, "1000 10 first\n2000 10 sec").unwrap();
        m.read_on();
        assert_eq!(m.syms, vec![sym(0x1000, 0x10, "first")]);
        writeln!(w, "ond").unwrap();
        std::fs::remove_file(&path).unwrap();
        m.read_on();
        assert_eq!(name(&m, 0x2004, 2), Some(("second".into(), 4)));
        assert_eq!(name(&m, 0x1004, 2), Some(("first".into(), 4)));
        // Written afresh: what the old file said goes; what the new one says comes after.
        w.set_len(0).unwrap();
        w.seek(SeekFrom::Start(0)).unwrap();
        writeln!(w, "3000 10 third").unwrap();
        m.read_on();
        assert_eq!(m.syms.len(), 1);
        assert_eq!(m.syms[0].seq, 2);
        assert_eq!(name(&m, 0x3000, 3), Some(("third".into(), 0)));
        assert_eq!(name(&m, 0x1004, 3), None);
    }
}
