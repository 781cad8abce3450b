//! Full paths for the mappings the kernel names by device, inode and basename.
//!
//! The programs see a VMA's file as `(dev, ino, dentry basename)`; /proc/PID/maps has the
//! full path. Each process's maps are read when it is first seen and again when an address
//! falls outside them, and the kernel side reports each file a process maps (`MapSeen`), so
//! paths and stacks resolve even after it exits: a file's path is known from any process that
//! maps it (pfault's own maps name libc and ld.so).

use std::{
    collections::HashMap,
    fs::File,
    os::fd::AsRawFd,
    path::PathBuf,
    time::{Duration, Instant},
};

use pfault_common::*;

use crate::{
    procfs::{self, cstr, read_maps, MapEntry, MapPath},
    records::Record,
};

struct ProcMaps {
    entries: Vec<MapEntry>,
    /// /proc/PID/maps could not be read (the process is gone): do not try again.
    gone: bool,
    first_seen: Instant,
    /// When /proc/PID/maps was last read.
    read_at: Instant,
}

/// How a process's maps are read: /proc/PID/maps, or what a test gives.
type ReadMaps = Box<dyn FnMut(u32) -> Option<Vec<MapEntry>>>;

/// Paths of the files seen mapped by any process, by `(dev, ino)`, the code files among them
/// held open, and the reader of maps that finds them.
struct Files {
    paths: HashMap<(u32, u64), String>,
    /// Code files, opened as the processes mapping them see them: their frames are named from
    /// these after the process is gone, never from a file the host has at the same path (a
    /// container's C library is not the host's). Held open, an inode keeps its number: a
    /// binary rebuilt in its place gets another, so it is never named from the old one.
    held: HashMap<FileId, File>,
    read: ReadMaps,
}

impl Files {
    /// A process's maps, every file's path remembered and every code file held on the way;
    /// `None` when it is gone.
    fn read(&mut self, pid: u32) -> Option<Vec<MapEntry>> {
        let entries = (self.read)(pid)?;
        for e in &entries {
            if let Some(p) = e.path.file() {
                self.paths.entry((e.dev, e.ino)).or_insert_with(|| p.to_string());
                // Past what may be held, a file is read at its path (see `Mappings::source`).
                if e.exec
                    && !self.held.contains_key(&e.file_id())
                    && self.held.len() < procfs::files_to_hold()
                {
                    if let Some((file, _)) = procfs::open_mapped(pid, e) {
                        self.held.insert(e.file_id(), file);
                    }
                }
            }
        }
        Some(entries)
    }
}

/// A miss re-reads a process's maps at most this often: an address no mapping holds any
/// more (unmapped since) must not cost a /proc read on every event.
const REREAD_EVERY: Duration = Duration::from_millis(20);

impl ProcMaps {
    /// After a miss, reads `pid`'s maps again, unless the process is gone or they were just
    /// read; says whether it did. Maps that cannot be read are a process gone.
    fn reread(&mut self, files: &mut Files, pid: u32) -> bool {
        if self.gone || self.read_at.elapsed() < REREAD_EVERY {
            return false;
        }
        self.read_at = Instant::now();
        match files.read(pid) {
            Some(entries) => self.entries = entries,
            None => self.gone = true,
        }
        true
    }

    fn read(files: &mut Files, pid: u32) -> ProcMaps {
        let entries = files.read(pid);
        ProcMaps {
            gone: entries.is_none(),
            entries: entries.unwrap_or_default(),
            first_seen: Instant::now(),
            read_at: Instant::now(),
        }
    }
}

/// A new process keeps mapping libraries for a while after exec; its maps are read again
/// during that time, so frames in them still resolve if it exits before pfault prints.
const NEWBORN: Duration = Duration::from_secs(1);
const YOUNG: Duration = Duration::from_secs(10);
const REFRESH_EVERY: Duration = Duration::from_millis(500);

pub(crate) struct Mappings {
    procs: HashMap<u32, ProcMaps>,
    files: Files,
    last_refresh: Option<Instant>,
}

impl Default for Mappings {
    fn default() -> Self {
        Mappings::with_reader(Box::new(read_maps))
    }
}

impl Mappings {
    /// Mappings whose processes' maps `read` gives.
    fn with_reader(read: ReadMaps) -> Mappings {
        let mut files = Files {
            paths: HashMap::new(),
            held: HashMap::new(),
            read,
        };
        // pfault's own maps: the C library and loader most processes map too.
        let _ = files.read(std::process::id());
        Mappings {
            procs: HashMap::new(),
            files,
            last_refresh: None,
        }
    }

    /// Knows `path` by its device and inode from the start, and holds it: the program pfault
    /// starts may exit before its maps are read, and a notice of its mapping carries only a
    /// basename.
    pub(crate) fn know_file(&mut self, path: &std::path::Path) {
        let (Ok(file), Ok(full)) = (File::open(path), std::fs::canonicalize(path)) else {
            return;
        };
        if let Some(id) = procfs::mapped_id(&file) {
            self.files
                .paths
                .insert((id.dev, id.ino), full.to_string_lossy().into_owned());
            self.files.held.insert(id, file);
        }
    }

    /// Where pfault reads file `id` from, as the processes mapping it see it: the file held
    /// open, or else (past [`procfs::files_to_hold`], or a file that could not be opened) the
    /// file at its path that has its inode number: under the root of `pid` (another mount
    /// namespace's paths are its own), or in pfault's (a chroot's paths are pfault's).
    pub(crate) fn source(&self, pid: u32, id: FileId, path: &str) -> Option<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        if let Some(f) = self.files.held.get(&id) {
            return Some(format!("/proc/self/fd/{}", f.as_raw_fd()).into());
        }
        [
            PathBuf::from(format!("/proc/{pid}/root{path}")),
            PathBuf::from(path),
        ]
        .into_iter()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.ino() == id.ino))
    }

    /// Remembers a process's mappings now, while it lives.
    pub(crate) fn note_process(&mut self, pid: u32) {
        if !self.procs.contains_key(&pid) {
            let p = ProcMaps::read(&mut self.files, pid);
            self.procs.insert(pid, p);
        }
    }

    /// Keeps what is known of the processes `keep` says may still be asked about.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u32) -> bool) {
        self.procs.retain(|&pid, _| keep(pid));
    }

    /// Drops what is known of a process that is gone, once nothing will ask for it.
    pub(crate) fn forget(&mut self, pid: u32) {
        self.procs.remove(&pid);
    }

    /// Takes in what a ring-buffer notice says about a process's maps.
    pub(crate) fn notice(&mut self, record: &Record) {
        match record {
            Record::Task(t) => self.seen(t),
            Record::Map(m) => self.mapped(m),
            Record::Fault(..) | Record::Stack { .. } | Record::Unwind(_) | Record::Late(_) => {}
        }
    }

    /// A file a process mapped, as the kernel saw it: it holds until the process maps over it.
    fn mapped(&mut self, m: &MapSeen) {
        let (pid, start, end) = (m.pid, m.map.vm_start, m.vm_end);
        let path = if m.map.kind != MAP_FILE {
            // Code no file backs (a JIT's).
            MapPath::Anonymous
        } else {
            match self.files.paths.get(&(m.map.dev, m.map.ino)) {
                Some(p) => MapPath::File(p.clone()),
                // A process already gone leaves the basename.
                None => std::fs::read_link(format!("/proc/{pid}/map_files/{start:x}-{end:x}"))
                    .map(|p| MapPath::File(p.to_string_lossy().into_owned()))
                    .unwrap_or_else(|_| MapPath::Basename(cstr(&m.map.name).to_string())),
            }
        };
        if let Some(p) = path.file() {
            self.files
                .paths
                .entry((m.map.dev, m.map.ino))
                .or_insert_with(|| p.to_string());
        }
        self.note_process(pid);
        let p = self.procs.get_mut(&pid).expect("noted above");
        p.entries.retain(|e| e.end <= start || end <= e.start);
        p.entries.push(MapEntry {
            start,
            end,
            file_offset: m.map.offset,
            dev: m.map.dev,
            ino: m.map.ino,
            path,
            // A notice does not carry the permissions; only the unwinder's warm-up asks.
            exec: false,
        });
    }

    /// Reads a process's maps again now (it exec'd, started a thread, or is new): a process
    /// that is gone keeps the map it had, and a fork child already gone gets its parent's,
    /// the layout it was born with.
    fn seen(&mut self, t: &TaskSeen) {
        let pid = t.pid;
        let mut fresh = ProcMaps::read(&mut self.files, pid);
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
    pub(crate) fn refresh_young(&mut self) {
        let slow_due = self.last_refresh.is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
        if slow_due {
            self.last_refresh = Some(Instant::now());
        }
        for (pid, p) in self.procs.iter_mut().filter(|(_, p)| !p.gone) {
            let age = p.first_seen.elapsed();
            if age < NEWBORN || slow_due && age < YOUNG {
                // A process that is gone keeps its last map.
                if let Some(entries) = self.files.read(*pid) {
                    p.entries = entries;
                }
            }
        }
    }

    /// The mapping of `pid` that holds `addr` (and, when given, is inode `ino`).
    pub(crate) fn lookup(&mut self, pid: u32, addr: u64, ino: Option<u64>) -> Option<&MapEntry> {
        self.note_process(pid);
        let p = self.procs.get_mut(&pid)?;
        let find = |entries: &[MapEntry]| {
            entries
                .iter()
                .position(|e| e.start <= addr && addr < e.end && ino.is_none_or(|i| e.ino == i))
        };
        let mut idx = find(&p.entries);
        if idx.is_none() && p.reread(&mut self.files, pid) {
            idx = find(&p.entries);
        }
        let e = &mut p.entries[idx?];
        // A file the kernel reported before any process showed its path: learnt since?
        if let MapPath::Basename(_) = e.path {
            if let Some(path) = self.files.paths.get(&(e.dev, e.ino)) {
                e.path = MapPath::File(path.clone());
            }
        }
        Some(e)
    }

    /// The path of file `(dev, ino)` as `pid` maps it.
    pub(crate) fn path_of(&mut self, pid: u32, dev: u32, ino: u64) -> Option<&str> {
        self.note_process(pid);
        let p = self.procs.get_mut(&pid)?;
        let find = |entries: &[MapEntry]| {
            entries
                .iter()
                .position(|e| e.ino == ino && e.dev == dev && e.path.file_name().is_some())
        };
        let mut idx = find(&p.entries);
        if idx.is_none() && p.reread(&mut self.files, pid) {
            idx = find(&p.entries);
        }
        match idx {
            Some(i) => p.entries[i].path.file_name(),
            // Another process maps the same file.
            None => self.files.paths.get(&(dev, ino)).map(String::as_str),
        }
    }

    /// A file the kernel named by basename, device and inode: its full path where a process
    /// mapping it is known, else the basename with device and inode.
    pub(crate) fn file_name(&mut self, pid: u32, dev: u32, ino: u64, basename: &str) -> String {
        match self.path_of(pid, dev, ino) {
            Some(p) => p.to_string(),
            None => format!("{basename} (dev {}:{} ino {ino})", dev >> 20, dev & 0xfffff),
        }
    }

    /// The name of a mapping counted in the kernel: the file's path (see [`Self::file_name`]),
    /// or `[anon]`/`[heap]`/`[stack]`.
    pub(crate) fn counted_name(
        &mut self,
        pid: u32,
        map_kind: u8,
        dev: u32,
        ino: u64,
        basename: &[u8],
    ) -> String {
        if map_kind == MAP_FILE {
            self.file_name(pid, dev, ino, cstr(basename))
        } else {
            anon_label(map_kind).to_string()
        }
    }

    /// How a fault's mapping reads: a full path, `[anon]`, `[heap]`, `[stack]`, or `-` when
    /// no mapping holds the address.
    pub(crate) fn describe(&mut self, pid: u32, addr: u64, m: &Mapping) -> String {
        match m.kind {
            MAP_FILE => match self.lookup(pid, addr, Some(m.ino)) {
                Some(e) if e.path.file_name().is_some() => e.path.to_string(),
                _ => self.file_name(pid, m.dev, m.ino, cstr(&m.name)),
            },
            kind => anon_label(kind).into(),
        }
    }
}

/// The name of memory no file backs, as /proc/PID/maps writes it.
pub(crate) fn anon_label(map_kind: u8) -> &'static str {
    match map_kind {
        MAP_ANON => "[anon]",
        MAP_HEAP => "[heap]",
        MAP_STACK => "[stack]",
        MAP_NONE => "-",
        _ => "?",
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, rc::Rc};

    use super::*;

    /// Process maps a test changes as it goes (a process that execs, exits, maps a file), and
    /// how many times they were read.
    #[derive(Default)]
    struct Procs {
        maps: HashMap<u32, Vec<MapEntry>>,
        reads: usize,
    }

    fn mappings() -> (Mappings, Rc<RefCell<Procs>>) {
        let procs = Rc::new(RefCell::new(Procs::default()));
        let seen = procs.clone();
        let reader = Box::new(move |pid: u32| {
            let mut p = seen.borrow_mut();
            p.reads += 1;
            p.maps.get(&pid).cloned()
        });
        (Mappings::with_reader(reader), procs)
    }

    /// What `pid`'s maps read from now on.
    fn set(procs: &Rc<RefCell<Procs>>, pid: u32, maps: Vec<MapEntry>) {
        procs.borrow_mut().maps.insert(pid, maps);
    }

    fn file(start: u64, ino: u64, path: &str) -> MapEntry {
        MapEntry {
            start,
            end: start + 0x1000,
            file_offset: 0,
            dev: 8 << 20 | 1,
            ino,
            path: MapPath::parse(path),
            exec: true,
        }
    }

    fn task(pid: u32, forked_from: u32) -> Record {
        Record::Task(TaskSeen {
            rec: REC_TASK,
            pid,
            tid: pid,
            forked_from,
        })
    }

    fn path(m: &mut Mappings, pid: u32, addr: u64) -> Option<String> {
        m.lookup(pid, addr, None).map(|e| e.path.to_string())
    }

    #[test]
    fn a_process_that_is_gone_keeps_the_maps_it_had() {
        let (mut m, procs) = mappings();
        set(&procs, 7, vec![file(0x1000, 1, "/bin/old")]);
        m.note_process(7);
        procs.borrow_mut().maps.remove(&7);
        m.refresh_young();
        assert_eq!(path(&mut m, 7, 0x1800).as_deref(), Some("/bin/old"));
    }

    #[test]
    fn an_exec_notice_reads_the_new_image() {
        let (mut m, procs) = mappings();
        set(&procs, 7, vec![file(0x1000, 1, "/bin/old")]);
        m.note_process(7);
        set(&procs, 7, vec![file(0x1000, 2, "/bin/new")]);
        m.notice(&task(7, 0));
        assert_eq!(path(&mut m, 7, 0x1800).as_deref(), Some("/bin/new"));
    }

    #[test]
    fn a_fork_child_gone_before_it_is_read_gets_its_parents_layout() {
        let (mut m, procs) = mappings();
        set(&procs, 7, vec![file(0x1000, 1, "/bin/parent")]);
        m.notice(&task(8, 7));
        assert_eq!(path(&mut m, 8, 0x1800).as_deref(), Some("/bin/parent"));
    }

    #[test]
    fn a_mapping_notice_of_a_gone_process_is_named_from_any_process_mapping_the_file() {
        let (mut m, procs) = mappings();
        // Another process maps the library, with its full path.
        set(&procs, 1, vec![file(0x9000, 5, "/lib/libx.so")]);
        m.note_process(1);
        let mut name = [0u8; NAME_LEN];
        name[..7].copy_from_slice(b"libx.so");
        // A pid no process has (above the kernel's pid_max): its /proc is never read.
        let gone = 0x7fff_fff0;
        let seen = MapSeen {
            rec: REC_MAP,
            pid: gone,
            vm_end: 0x5000,
            map: Mapping {
                vm_start: 0x4000,
                offset: 0,
                ino: 5,
                dev: 8 << 20 | 1,
                kind: MAP_FILE,
                _pad: [0; 3],
                name,
            },
            exec: 1,
            _pad: [0; 7],
        };
        m.notice(&Record::Map(seen));
        assert_eq!(path(&mut m, gone, 0x4800).as_deref(), Some("/lib/libx.so"));
        // A file no process showed the path of keeps its basename.
        let seen = MapSeen {
            map: Mapping { ino: 6, ..seen.map },
            ..seen
        };
        m.notice(&Record::Map(seen));
        assert_eq!(path(&mut m, gone, 0x4800).as_deref(), Some("libx.so"));
    }

    /// A binary deleted and written again at its path (ext4 gives the new file the old
    /// inode number at once, unless the old one is held) is read from the file it was.
    #[test]
    fn a_file_known_is_read_from_itself_after_another_takes_its_path() {
        let dir = std::env::temp_dir().join(format!("pfault-held-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("prog");
        std::fs::write(&path, b"old binary").unwrap();
        let id = procfs::mapped_id(&File::open(&path).unwrap()).unwrap();
        let (mut m, _) = mappings();
        m.know_file(&path);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"new binary").unwrap();
        let at = path.to_str().unwrap();
        let read = |m: &Mappings, id| m.source(std::process::id(), id, at).map(std::fs::read);
        assert_eq!(read(&m, id).unwrap().unwrap(), b"old binary");
        // Not held: the file at its path only where it has the inode number asked for.
        let new_id = procfs::mapped_id(&File::open(&path).unwrap()).unwrap();
        let (fresh, _) = mappings();
        assert_eq!(read(&fresh, new_id).unwrap().unwrap(), b"new binary");
        let other = FileId {
            ino: new_id.ino + 1,
            ..new_id
        };
        assert!(read(&fresh, other).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_miss_rereads_the_maps_but_not_on_every_address() {
        let (mut m, procs) = mappings();
        set(&procs, 7, vec![file(0x1000, 1, "/bin/a")]);
        m.note_process(7);
        // Mapped since the last read: a miss reads again, once the last read is old enough.
        procs
            .borrow_mut()
            .maps
            .get_mut(&7)
            .unwrap()
            .push(file(0x8000, 3, "/lib/b.so"));
        std::thread::sleep(REREAD_EVERY);
        assert_eq!(path(&mut m, 7, 0x8800).as_deref(), Some("/lib/b.so"));
        let reads = procs.borrow().reads;
        for _ in 0..100 {
            assert_eq!(path(&mut m, 7, 0xdead_0000), None);
        }
        assert!(procs.borrow().reads <= reads + 1, "a read per unknown address");
    }
}
