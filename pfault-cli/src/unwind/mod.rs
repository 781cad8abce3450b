//! CFI unwinding's userspace half: the tables the kernel side unwinds user stacks with.
//!
//! Each binary's table ([`table::Cfi::table`]) goes into `UNWIND_ROWS`, an mmap-able array
//! that is written in place (one syscall per table, not per row), and its place into
//! `UNWIND_FILES`, which the kernel side reads by file: one table serves every process that
//! maps the file, and every file with the same CFI (a container's copy of a library).
//! Tables are built ahead for the files the target process (and pfault
//! itself: the C library and loader most processes share) has mapped as code, while the
//! programs load; after that, when the kernel side meets code of a file it has no table
//! for, it asks (`REC_UNWIND`) and worker threads build it, meanwhile the frame pointer
//! stands in; a stack that met a table still loading is copied to userspace and walked here
//! once the table is in ([`late`]), and its table goes ahead of the others ([`queue`]).
//! Rows are never freed: a run that meets more code than `--unwind-mb` holds unwinds the
//! rest by frame pointer, and says so.

pub(crate) mod late;
mod needed;
mod queue;
pub(crate) mod table;

use std::{
    collections::HashMap,
    fs::File,
    os::{
        fd::AsFd,
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex},
    thread::JoinHandle,
};

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use pfault_common::*;
use serde::Serialize;

pub(crate) use self::queue::Wanted;
use self::{
    queue::{Job, Queue},
    table::NoCfi,
};
use crate::procfs;

/// Which user-stack walk the kernel side does (`--unwind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Unwind {
    /// The binaries' CFI (.eh_frame, .debug_frame, debug files under /usr/lib/debug): right
    /// without frame pointers; the frame pointer where code has no CFI
    Cfi,
    /// Frame pointers only (bpf_get_stack), as bcc and bpftrace walk: skips the caller of
    /// code that keeps none (memset, memcpy, -O2 C, Rust)
    Fp,
}

/// A table built for a file, or why it has none.
struct Built {
    /// The file as the kernel side names it.
    id: FileId,
    path: PathBuf,
    /// Held open for the run: a file's inode number is not given to another file while it
    /// lives, so the kernel side's name for it (device and inode, all it can read cheaply)
    /// keeps naming this file, and a binary rebuilt in its place never gets its table.
    file: File,
    /// What its rows are made of, hashed ([`table::Cfi::digest`]), where it has CFI to read.
    digest: Option<u64>,
    /// Its table, or why it has none; `Ok(None)` where a file with the same CFI (`digest`)
    /// has its rows in already.
    table: Result<Option<table::Table>, NoCfi>,
}

/// Builds the table of `file`, but where `loaded` says a file with the same CFI has one.
fn build_file(file: File, id: FileId, path: PathBuf, loaded: impl FnOnce(u64) -> bool) -> Built {
    let mut digest = None;
    let table = with_cfi(&file, &path, |cfi| {
        let d = cfi.digest(digests());
        digest = Some(d);
        if loaded(d) {
            Ok(None)
        } else {
            cfi.table().map(Some)
        }
    });
    Built {
        id,
        path,
        file,
        digest,
        table,
    }
}

/// The hasher of CFI digests: one per run, so no file can be made to collide with another.
fn digests() -> &'static std::hash::RandomState {
    static STATE: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    STATE.get_or_init(std::hash::RandomState::new)
}

/// `f` of the CFI of `file` (at `path`, where its separate debug file is looked for).
fn with_cfi<T>(file: &File, path: &Path, f: impl FnOnce(table::Cfi) -> Result<T, NoCfi>) -> Result<T, NoCfi> {
    // SAFETY: the map is read only; a file truncated under us could fault, as for any
    // reader of a mapped binary (the loader itself maps them the same way).
    let data = unsafe { memmap2::Mmap::map(file) }.map_err(|e| NoCfi::CannotMap(e.to_string()))?;
    f(table::cfi(&data, |elf| debug_file(elf, path))?)
}

/// Where distributions install separate debug files (`-dbg`, `-dbgsym`, `-debuginfo`).
const DEBUG_DIR: &str = "/usr/lib/debug";

/// The separate debug file of `elf` (at `path`), where gdb looks for it: by build id under
/// [`DEBUG_DIR`], else by `.gnu_debuglink` beside it, in its `.debug/`, or under
/// [`DEBUG_DIR`] at its own directory, with the CRC the link gives.
fn debug_file(elf: &object::File, path: &Path) -> Option<table::DebugFile> {
    use object::Object;
    let map = |p: &Path| {
        let file = File::open(p).ok()?;
        // SAFETY: read only, as `build_file`'s own map.
        unsafe { memmap2::Mmap::map(&file) }.ok()
    };
    if let Some(id) = elf.build_id().ok().flatten().filter(|id| id.len() > 1) {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let p = PathBuf::from(format!("{DEBUG_DIR}/.build-id/{}/{}.debug", &hex[..2], &hex[2..]));
        if let Some(m) = map(&p) {
            return Some((p, m));
        }
    }
    let (name, crc) = elf.gnu_debuglink().ok().flatten()?;
    let name = Path::new(std::ffi::OsStr::from_bytes(name));
    let dir = path.parent()?;
    let candidates = [
        dir.join(name),
        dir.join(".debug").join(name),
        Path::new(DEBUG_DIR)
            .join(dir.strip_prefix("/").unwrap_or(dir))
            .join(name),
    ];
    candidates.into_iter().find_map(|p| {
        let m = map(&p)?;
        let mut sum = flate2::Crc::new();
        sum.update(&m);
        (sum.sum() == crc).then_some((p, m))
    })
}

/// The rows of the file at `path`, where it has CFI: for a late walk whose table the loader
/// never built (its process exited before the request was served).
pub(crate) fn rows_of_file(path: &Path) -> Option<Arc<[UnwindRow]>> {
    let table = with_cfi(&File::open(path).ok()?, path, |cfi| cfi.table()).ok()?;
    Some(table.rows.into())
}

/// A code mapping of the target process, to fill `TEXT_VMAS` with ahead.
struct CodeMap {
    start: u64,
    end: u64,
    file_offset: u64,
    file: FileId,
}

/// What [`build_ahead`] leaves: tables, and the target's code mappings.
#[derive(Default)]
struct BuiltAhead {
    tables: Vec<Built>,
    target: Vec<CodeMap>,
}

/// Tables for the files `pids` have mapped as code (but pfault's own program, which it never
/// traces), and for `program` and the libraries it will load, built on a thread of their
/// own. The first pid is the target.
fn build_ahead(pids: Vec<u32>, program: Option<PathBuf>) -> JoinHandle<BuiltAhead> {
    std::thread::spawn(move || {
        let own = std::fs::metadata("/proc/self/exe").ok().map(|m| m.ino());
        let mut seen = Vec::new();
        let mut out = BuiltAhead::default();
        if let Some(program) = program {
            let libraries = needed::libraries(&program);
            for path in std::iter::once(program).chain(libraries) {
                let Ok(file) = File::open(&path) else { continue };
                if let Some(id) = procfs::mapped_id(&file).filter(|id| !seen.contains(id)) {
                    seen.push(id);
                    out.tables.push(build_file(file, id, path, |_| false));
                }
            }
        }
        for (i, pid) in pids.into_iter().enumerate() {
            for m in procfs::read_maps(pid).unwrap_or_default() {
                if !m.exec || m.path.file().is_none() {
                    continue;
                }
                if pid == std::process::id() && own == Some(m.ino) {
                    continue;
                }
                let Some((file, path)) = procfs::open_mapped(pid, &m) else {
                    continue;
                };
                let id = m.file_id();
                if i == 0 {
                    out.target.push(CodeMap {
                        start: m.start,
                        end: m.end,
                        file_offset: m.file_offset,
                        file: id,
                    });
                }
                if !seen.contains(&id) {
                    seen.push(id);
                    out.tables.push(build_file(file, id, path, |_| false));
                }
            }
        }
        out
    })
}

/// What the tables hold, for the run's summary.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Stats {
    /// Rows `UNWIND_ROWS` has room for, and their bytes.
    pub(crate) capacity_rows: u64,
    pub(crate) capacity_bytes: u64,
    /// In `UNWIND_ROWS` (a table shared by files with the same CFI counted once), summed
    /// when the stats are read.
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    /// Every table loaded, largest first.
    pub(crate) tables: Vec<TableStat>,
    /// Files whose code is unwound by frame pointer, and why.
    pub(crate) without_cfi: Vec<NoTable>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct TableStat {
    pub(crate) path: String,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    /// Where its rows came from: `.eh_frame`, `.debug_frame`, a debug file's `.debug_frame`.
    pub(crate) cfi: Vec<String>,
    /// FDEs that could not be read (a truncated or corrupt .eh_frame).
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) bad_fdes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct NoTable {
    pub(crate) path: String,
    pub(crate) why: NoCfi,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `UNWIND_ROWS`: each table is written in place through a mapping of just its own pages.
/// Mapping the whole array at once would put all of it (8 MiB by default) in pfault's RSS:
/// the kernel maps an array's pages when it is mapped, not as they are touched.
struct RowsMap {
    file: File,
    /// Keeps the map alive as long as it is written.
    _map: MapData,
    capacity: usize,
    next: usize,
}

impl RowsMap {
    fn new(map: Map, capacity: usize) -> Result<RowsMap> {
        let Map::Array(data) = map else {
            anyhow::bail!("UNWIND_ROWS is not an array map");
        };
        let file = File::from(data.fd().as_fd().try_clone_to_owned()?);
        // Refused here rather than at the first table: BPF_F_MMAPABLE arrays need 5.5+.
        // SAFETY: one page of an mmap-able BPF array, unmapped at once.
        unsafe { memmap2::MmapOptions::new().len(4096).map_mut(&file) }
            .context("mapping the unwind-row map into pfault (BPF_F_MMAPABLE arrays: Linux 5.5+)")?;
        Ok(RowsMap {
            file,
            _map: data,
            capacity,
            next: 0,
        })
    }

    /// Copies `rows` in; their first index, or why they are not there.
    fn push(&mut self, rows: &[UnwindRow]) -> Result<u32, NoCfi> {
        if self.next + rows.len() > self.capacity {
            return Err(NoCfi::NoRoom(rows.len()));
        }
        let first = self.next;
        let bytes = size_of_val(rows);
        // SAFETY: a window of an mmap-able BPF array of `capacity` rows, within it (memmap2
        // aligns the offset down to a page); the kernel side reads a table's rows only after
        // its UNWIND_FILES entry says they are written.
        let mut window = unsafe {
            memmap2::MmapOptions::new()
                .offset((first * size_of::<UnwindRow>()) as u64)
                .len(bytes)
                .map_mut(&self.file)
        }
        .map_err(|e| NoCfi::CannotWrite(e.to_string()))?;
        // SAFETY: UnwindRow is plain data with the kernel's layout, and the window holds
        // exactly `rows.len()` of them.
        let src = unsafe { std::slice::from_raw_parts(rows.as_ptr() as *const u8, bytes) };
        window.copy_from_slice(src);
        self.next += rows.len();
        Ok(first as u32)
    }
}

/// Loads tables into the maps and keeps count.
struct Loader {
    rows: RowsMap,
    files: BpfHashMap<MapData, FileId, UnwindFile>,
    /// Held open: the programs are loaded after the maps are taken.
    text: BpfHashMap<MapData, TextKey, TextVma>,
    /// Files handled, and where their tables were left.
    done: HashMap<FileId, UnwindFile>,
    /// Tables by the digest of their CFI, and the file they were built for.
    by_digest: HashMap<u64, (UnwindFile, String)>,
    /// `done`, for late walks: also under the name /proc/PID/maps gives a file, where it
    /// differs from the kernel's (btrfs subvolumes, overlayfs).
    placed: Arc<Mutex<HashMap<FileId, UnwindFile>>>,
    /// The files of `done`, held open (see [`Built::file`]).
    held: Vec<File>,
    stats: Arc<Mutex<Stats>>,
}

impl Loader {
    fn load(&mut self, b: Built) {
        if self.done.contains_key(&b.id) {
            return;
        }
        let path = b.path.display().to_string();
        let placed = b.table.and_then(|t| {
            let path = path.clone();
            let (entry, stat) = match t {
                Some(t) => {
                    let first = self.rows.push(&t.rows)?;
                    let entry = UnwindFile {
                        first,
                        rows: t.rows.len() as u32,
                        state: TABLE_READY,
                        _pad: 0,
                    };
                    if let Some(d) = b.digest {
                        self.by_digest.insert(d, (entry, path.clone()));
                    }
                    let stat = TableStat {
                        path,
                        rows: t.rows.len() as u64,
                        bytes: size_of_val(t.rows.as_slice()) as u64,
                        cfi: t.sources,
                        bad_fdes: t.bad_fdes as u64,
                    };
                    (entry, stat)
                }
                // The rows another file with the same CFI put in: a table, but no more bytes.
                None => {
                    let (entry, of) = b
                        .digest
                        .and_then(|d| self.by_digest.get(&d).cloned())
                        .expect("a table is shared only by a digest loaded");
                    let stat = TableStat {
                        path,
                        rows: entry.rows as u64,
                        bytes: 0,
                        cfi: vec![format!("{of}'s table")],
                        bad_fdes: 0,
                    };
                    (entry, stat)
                }
            };
            // Published after its rows: the kernel side reads rows only of a ready table.
            self.files
                .insert(b.id, entry, 0)
                .map_err(|e| NoCfi::FileTableFull(e.to_string()))?;
            Ok((entry, stat))
        });
        let mut stats = self.stats.lock().unwrap();
        let entry = match placed {
            Ok((entry, stat)) => {
                let at = stats.tables.partition_point(|s| s.rows >= stat.rows);
                stats.tables.insert(at, stat);
                entry
            }
            Err(why) => {
                let state = if matches!(why, NoCfi::NoRoom(_)) {
                    TABLE_NO_ROOM
                } else {
                    TABLE_NONE
                };
                stats.without_cfi.push(NoTable { path, why });
                let none = UnwindFile {
                    state,
                    ..Default::default()
                };
                // The kernel side stops asking for it; where even this fails (the table of
                // binaries full), it asks again and is answered from `done`.
                let _ = self.files.insert(b.id, none, 0);
                none
            }
        };
        drop(stats);
        self.done.insert(b.id, entry);
        self.publish(b.id, entry);
        // Past what may be held, a binary rebuilt in this one's place may get its table.
        if self.held.len() < procfs::files_to_hold() {
            self.held.push(b.file);
        }
    }

    /// Makes `entry` the table late walks find under `id`.
    fn publish(&self, id: FileId, entry: UnwindFile) {
        self.placed.lock().unwrap().insert(id, entry);
    }

    /// Fills `TEXT_VMAS` with process `pid`'s code mappings: the kernel side then walks its
    /// stacks whole from the first fault (it finds one new mapping per fault by itself).
    fn prime(&mut self, pid: u32, maps: &[CodeMap]) {
        for m in maps {
            let Some(table) = self.done.get(&m.file) else {
                continue;
            };
            let v = TextVma {
                start: m.start,
                end: m.end,
                bias: m.file_offset.wrapping_sub(m.start),
                file: m.file,
                table: *table,
            };
            for granule in m.start >> TEXT_GRANULE_SHIFT..=(m.end - 1) >> TEXT_GRANULE_SHIFT {
                let key = TextKey {
                    tgid: pid,
                    // A process that has not exec'd since the programs loaded.
                    gen: 0,
                    granule: granule as u32,
                    _pad: 0,
                };
                let _ = self.text.insert(key, v, 0);
            }
        }
    }

    /// Answers a request for a file handled already (the kernel side asked before it saw
    /// the table): whether it was.
    fn answered(&mut self, need: &UnwindNeed) -> bool {
        let Some(entry) = self.done.get(&need.file) else {
            return false;
        };
        let _ = self.files.insert(need.file, *entry, 0);
        true
    }

    /// Gives file `id` the table built ahead under `mapped`, the name /proc/PID/maps gives it
    /// (an overlay's): whether there was one.
    fn built_as(&mut self, id: FileId, mapped: FileId) -> bool {
        let Some(entry) = self.done.get(&mapped).copied() else {
            return false;
        };
        let _ = self.files.insert(id, entry, 0);
        self.done.insert(id, entry);
        self.publish(id, entry);
        true
    }
}

/// Serves the kernel side's request: the file behind one of `need.pid`'s mappings. The loader
/// is locked only to look up and to load, not while the table is built: the other thread
/// serves a wanted request meanwhile.
fn serve(loader: &Mutex<Loader>, need: &UnwindNeed) {
    if loader.lock().unwrap().answered(need) {
        return;
    }
    let mapped = procfs::read_maps(need.pid).and_then(|maps| {
        let m = maps
            .into_iter()
            .find(|m| m.start == need.vm_start && m.end == need.vm_end)?;
        let (file, path) = procfs::open_mapped(need.pid, &m)?;
        Some((m, file, path))
    });
    match mapped {
        Some((m, file, path)) if names(&m, &file, need.file) => {
            if !loader.lock().unwrap().built_as(need.file, m.file_id()) {
                let built = build_file(file, need.file, path, |digest| {
                    loader.lock().unwrap().by_digest.contains_key(&digest)
                });
                loader.lock().unwrap().load(built);
            }
            let loader = loader.lock().unwrap();
            if let Some(&entry) = loader.done.get(&need.file) {
                loader.publish(m.file_id(), entry);
            }
        }
        // The process is gone, or mapped something else there since: let the next process
        // that runs this code ask again.
        _ => {
            let _ = loader.lock().unwrap().files.remove(&need.file);
        }
    }
}

/// Whether the mapping `m` (its file opened as `file`) is of the file the kernel side named
/// `id`: the same device and inode, or on overlayfs, the overlay's file over it (the same
/// inode number: layers on one file system keep their files' numbers, as Docker's and
/// Podman's do; where they do not, its code is walked by frame pointer, as before).
fn names(m: &procfs::MapEntry, file: &File, id: FileId) -> bool {
    m.file_id() == id || m.ino == id.ino && procfs::stacked(file)
}

/// The tables' loader threads, and what they loaded.
pub(crate) struct Unwinder {
    jobs: Arc<Queue>,
    stats: Arc<Mutex<Stats>>,
    tables: Tables,
}

/// The tables as late walks read them: where each file's rows are, and the rows' map.
#[derive(Clone)]
pub(crate) struct Tables {
    placed: Arc<Mutex<HashMap<FileId, UnwindFile>>>,
    rows: Arc<File>,
    jobs: Arc<Queue>,
}

impl Tables {
    /// The table of file `id` (as the kernel or /proc/PID/maps names it): its rows, `None`
    /// where it has none; `Err` while it is not handled yet.
    pub(crate) fn rows(&self, id: FileId) -> Result<Option<Arc<[UnwindRow]>>, Unhandled> {
        let t = *self.placed.lock().unwrap().get(&id).ok_or(Unhandled)?;
        if t.state != TABLE_READY {
            return Ok(None);
        }
        let (first, n) = (t.first as usize, t.rows as usize);
        let size = size_of::<UnwindRow>();
        // A window of just the table's pages, as they are written (see `RowsMap`); rows are
        // written before their table is published, and never again.
        // SAFETY: a read-only window of an mmap-able BPF array, within it.
        let Ok(window) = (unsafe {
            memmap2::MmapOptions::new()
                .offset((first * size) as u64)
                .len(n * size)
                .map(&*self.rows)
        }) else {
            return Ok(None);
        };
        Ok(Some(
            (0..n)
                .map(|i| {
                    // SAFETY: `n` rows lie in the window; unaligned reads of plain data.
                    unsafe { std::ptr::read_unaligned(window.as_ptr().add(i * size).cast::<UnwindRow>()) }
                })
                .collect(),
        ))
    }

    /// How many files the loader has handled: a late walk that waited for one is tried again
    /// once this grows.
    pub(crate) fn handled(&self) -> usize {
        self.placed.lock().unwrap().len()
    }

    /// Held stacks wait on `w`'s table: its request goes first.
    pub(crate) fn want(&self, w: Wanted) {
        self.jobs.want(w);
    }
}

/// A file the loader has not handled (yet).
#[derive(Debug)]
pub(crate) struct Unhandled;

/// Tables being built ahead, before the maps exist.
pub(crate) struct Ahead {
    pid: Option<u32>,
    built: JoinHandle<BuiltAhead>,
}

impl Ahead {
    /// Starts building tables for the code `pid` (when given) and pfault itself have mapped,
    /// and for `program` (a command about to start).
    pub(crate) fn start(pid: Option<u32>, program: Option<PathBuf>) -> Ahead {
        let mut pids: Vec<u32> = pid.into_iter().collect();
        pids.push(std::process::id());
        Ahead {
            pid,
            built: build_ahead(pids, program),
        }
    }
}

impl Drop for Unwinder {
    fn drop(&mut self) {
        self.jobs.close();
    }
}

impl Unwinder {
    /// Takes the unwind maps, loads the tables built ahead (and the target's code mappings),
    /// and starts the thread that builds the rest as the kernel side asks.
    pub(crate) fn start(
        rows: Map,
        files: Map,
        text: Map,
        capacity_rows: u32,
        ahead: Ahead,
    ) -> Result<Unwinder> {
        let stats = Arc::new(Mutex::new(Stats {
            capacity_rows: capacity_rows as u64,
            capacity_bytes: capacity_rows as u64 * size_of::<UnwindRow>() as u64,
            ..Default::default()
        }));
        let rows = RowsMap::new(rows, capacity_rows as usize)?;
        let jobs = Arc::new(Queue::default());
        let tables = Tables {
            placed: Arc::default(),
            rows: Arc::new(rows.file.try_clone().context("duplicating the unwind-row map")?),
            jobs: jobs.clone(),
        };
        let mut loader = Loader {
            rows,
            placed: tables.placed.clone(),
            files: BpfHashMap::try_from(files)?,
            text: BpfHashMap::try_from(text)?,
            done: HashMap::new(),
            by_digest: HashMap::new(),
            held: Vec::new(),
            stats: stats.clone(),
        };
        // A panic there is a bug in pfault: said as one, not taken for "no tables".
        let built = ahead.built.join().map_err(|_| {
            anyhow::anyhow!("building unwind tables failed (pfault panicked): use --unwind fp")
        })?;
        for b in built.tables {
            loader.load(b);
        }
        if let Some(pid) = ahead.pid {
            loader.prime(pid, &built.target);
        }
        let loader = Arc::new(Mutex::new(loader));
        let in_order = {
            let (jobs, loader) = (jobs.clone(), loader.clone());
            move || {
                while let Some(job) = jobs.next() {
                    match job {
                        Job::Need(n) => serve(&loader, &n),
                        Job::Sync(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            }
        };
        let wanted = {
            let (jobs, loader) = (jobs.clone(), loader);
            move || {
                while let Some(n) = jobs.next_wanted() {
                    serve(&loader, &n);
                    jobs.hurried();
                }
            }
        };
        for (name, work) in [
            ("pfault-unwind", Box::new(in_order) as Box<dyn FnOnce() + Send>),
            ("pfault-unwind-w", Box::new(wanted)),
        ] {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(work)
                .context("starting the unwind-table threads")?;
        }
        Ok(Unwinder { jobs, stats, tables })
    }

    /// The kernel side met code it has no table for.
    pub(crate) fn need(&self, need: UnwindNeed) {
        self.jobs.push(Job::Need(need));
    }

    /// The tables, for late walks.
    pub(crate) fn tables(&self) -> Tables {
        self.tables.clone()
    }

    /// What the tables hold, once the requests so far are served.
    pub(crate) fn stats(&self) -> Stats {
        let (tx, rx) = mpsc::channel();
        self.jobs.push(Job::Sync(tx));
        let _ = rx.recv();
        let mut s = self.stats.lock().unwrap().clone();
        // A shared table took no bytes: its rows are another's.
        s.rows = s.tables.iter().filter(|t| t.bytes > 0).map(|t| t.rows).sum();
        s.bytes = s.tables.iter().map(|t| t.bytes).sum();
        s
    }
}

/// `--unwind-mb`'s default: room for the tables of a few hundred typical binaries.
pub(crate) const UNWIND_MB: u32 = 8;

/// Rows of `UNWIND_ROWS` in `mb` MiB.
pub(crate) fn rows_for_mb(mb: u32) -> u32 {
    ((mb as u64) << 20).div_ceil(size_of::<UnwindRow>() as u64) as u32
}

/// "3 tables (libc.so.6 31,204 rows, ...), 420 KiB of 8 MiB", for the run's end.
pub(crate) fn describe(s: &Stats) -> String {
    let name = |p: &str| {
        Path::new(p)
            .file_name()
            .map_or(p.to_string(), |n| n.to_string_lossy().into_owned())
    };
    let listed: Vec<String> = s
        .tables
        .iter()
        .take(4)
        .map(|t| {
            // Said where it is not the usual .eh_frame alone.
            let from = if t.cfi == [".eh_frame"] {
                String::new()
            } else {
                format!(" from {}", t.cfi.join(" and "))
            };
            format!("{} {} rows{from}", name(&t.path), t.rows)
        })
        .collect();
    let more = s.tables.len().saturating_sub(listed.len());
    let mut line = format!(
        "{} tables ({}{}), {} KiB of {} KiB",
        s.tables.len(),
        listed.join(", "),
        if more > 0 {
            format!(", {more} more")
        } else {
            String::new()
        },
        s.bytes.div_ceil(1024),
        s.capacity_bytes / 1024
    );
    if !s.without_cfi.is_empty() {
        let list: Vec<String> = s
            .without_cfi
            .iter()
            .take(3)
            .map(|n| format!("{}: {}", name(&n.path), n.why))
            .collect();
        line.push_str(&format!("; by frame pointer: {}", list.join("; ")));
        if s.without_cfi.len() > 3 {
            line.push_str(&format!(" and {} more", s.without_cfi.len() - 3));
        }
    }
    line
}
