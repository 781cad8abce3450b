//! What pfault reads from /proc and a few system calls around it: processes, their maps, the
//! page size, pfault's own capabilities. Parsers are pure functions over text, so they are
//! tested (and fuzzed) without a live process.

use anyhow::{bail, Result};
use pfault_common::FileId;

/// One line of /proc/PID/maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub file_offset: u64,
    /// As the kernel keeps it in `super_block.s_dev`: major << 20 | minor.
    pub dev: u32,
    pub ino: u64,
    pub path: MapPath,
    /// Mapped executable (`x` in its permissions): code.
    pub exec: bool,
}

/// What a mapping maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapPath {
    /// A file, by its full path (" (deleted)" kept: it is how the kernel names it).
    File(String),
    /// A file the kernel named by its basename alone: the notice of a process already gone.
    Basename(String),
    /// Memory no file backs.
    Anonymous,
    /// What the kernel names in brackets: `[heap]`, `[stack]`, `[vdso]`, `[anon:NAME]`.
    Special(String),
}

impl MapPath {
    /// The name field of a /proc/PID/maps line.
    pub fn parse(name: &str) -> MapPath {
        match name.chars().next() {
            None => MapPath::Anonymous,
            Some('/') => MapPath::File(name.into()),
            Some('[') => MapPath::Special(name.into()),
            Some(_) => MapPath::Basename(name.into()),
        }
    }

    /// The file's full path, to open or symbolize.
    pub fn file(&self) -> Option<&str> {
        match self {
            MapPath::File(p) => Some(p),
            _ => None,
        }
    }

    /// The file, by its full path or its basename.
    pub fn file_name(&self) -> Option<&str> {
        match self {
            MapPath::File(p) | MapPath::Basename(p) => Some(p),
            _ => None,
        }
    }
}

impl std::fmt::Display for MapPath {
    /// As /proc/PID/maps writes it, but `[anon]` for anonymous memory.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            MapPath::File(p) | MapPath::Basename(p) | MapPath::Special(p) => f.write_str(p),
            MapPath::Anonymous => f.write_str("[anon]"),
        }
    }
}

/// Parses /proc/PID/maps text. Lines that do not parse are skipped: the file is the kernel's,
/// but a path may hold anything (spaces, " (deleted)").
pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    text.lines().filter_map(parse_maps_line).collect()
}

/// The next whitespace-separated field of `rest`, which moves past it.
fn field<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let s = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let end = s.find(|c: char| c.is_ascii_whitespace()).unwrap_or(s.len());
    let (f, r) = s.split_at(end);
    *rest = r;
    (!f.is_empty()).then_some(f)
}

fn parse_maps_line(line: &str) -> Option<MapEntry> {
    let mut rest = line;
    let (range, perms, off, dev, ino) = (
        field(&mut rest)?,
        field(&mut rest)?,
        field(&mut rest)?,
        field(&mut rest)?,
        field(&mut rest)?,
    );
    // The rest of the line, as the kernel wrote it after its padding: a path keeps its own
    // runs of spaces and trailing spaces.
    let path = MapPath::parse(rest.trim_start_matches(|c: char| c.is_ascii_whitespace()));
    let (s, e) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    let (major, minor) = (
        u32::from_str_radix(major, 16).ok()?,
        u32::from_str_radix(minor, 16).ok()?,
    );
    Some(MapEntry {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        file_offset: u64::from_str_radix(off, 16).ok()?,
        dev: (major & 0xfff) << 20 | (minor & 0xfffff),
        ino: ino.parse().ok()?,
        path,
        exec: perms.contains('x'),
    })
}

impl MapEntry {
    /// The mapped file as the kernel side names it: the device and inode /proc/PID/maps prints
    /// are the VMA's inode's (`i_sb->s_dev`, `i_ino`), as the kernel side reads them. `stat`
    /// says otherwise on btrfs, whose subvolumes each report a device of their own, and on
    /// overlayfs (see [`stacked`]).
    pub(crate) fn file_id(&self) -> FileId {
        FileId {
            ino: self.ino,
            dev: self.dev,
            _pad: 0,
        }
    }
}

/// The identity the kernel gives `file` once mapped, as /proc/self/maps prints it for a page
/// of it mapped here: for a path (a program about to start), where no process maps it yet.
pub(crate) fn mapped_id(file: &std::fs::File) -> Option<FileId> {
    // SAFETY: one page, read only, unmapped when `page` drops; it is never read.
    let page = unsafe { memmap2::MmapOptions::new().len(1).map(file) }.ok()?;
    let at = page.as_ptr() as u64;
    read_maps(std::process::id())?
        .into_iter()
        .find(|e| e.start == at)
        .map(|e| e.file_id())
}

/// Whether an open file is on overlayfs, whose mappings are of the file in a layer below:
/// the kernel side names that one, while /proc/PID/maps and `stat` name the overlay's inode
/// (on one device, the same inode number; another device).
pub(crate) fn stacked(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
    // SAFETY: an all-zero statfs is valid for fstatfs to fill.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a statfs to write.
    unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) == 0 && fs.f_type as i64 == OVERLAYFS_SUPER_MAGIC }
}

/// The file behind process `pid`'s mapping `e`, opened as the process sees it (its own file,
/// even deleted or replaced since, in its own mount namespace), and its path as it names it.
pub(crate) fn open_mapped(pid: u32, e: &MapEntry) -> Option<(std::fs::File, std::path::PathBuf)> {
    let link = std::path::PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", e.start, e.end));
    let file = std::fs::File::open(&link).ok()?;
    let path = e.path.file().map(Into::into).unwrap_or(link);
    Some((file, path))
}

/// The soft limit of open files pfault started with, where it raised it.
static OPEN_FILES_SOFT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);

/// The limit of open files now (async-signal-safe).
fn open_files_limit() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to read into.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim)
}

/// Sets the soft limit of open files (async-signal-safe); whether it took.
fn set_open_files_soft(mut lim: libc::rlimit, soft: u64) -> bool {
    lim.rlim_cur = soft;
    // SAFETY: a valid rlimit to set.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 }
}

/// Raises the soft limit of open files to the hard one: pfault holds each file it unwinds or
/// names open for the run (see `unwind` and `mappings`), thousands on a busy host, as many as
/// [`files_to_hold`] says. A command pfault starts gets the limit back
/// ([`restore_open_files_limit`]): a program using select(2) breaks past 1024 descriptors.
pub(crate) fn raise_open_files_limit() {
    if let Some(lim) = open_files_limit().filter(|l| l.rlim_cur < l.rlim_max) {
        if set_open_files_soft(lim, lim.rlim_max) {
            OPEN_FILES_SOFT.store(lim.rlim_cur, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// How many files each of the two that hold files open for the run (unwind tables,
/// symbolization) may hold: a quarter of the open-files limit each, half of it left for the
/// rest (/proc reads, the maps and programs, the symbolizer's own).
pub(crate) fn files_to_hold() -> usize {
    open_files_limit().map_or(0, |l| (l.rlim_cur / 4).try_into().unwrap_or(usize::MAX))
}

/// Puts back the soft limit of open files [`raise_open_files_limit`] raised: in a child
/// between fork and exec (async-signal-safe).
pub(crate) fn restore_open_files_limit() {
    let soft = OPEN_FILES_SOFT.load(std::sync::atomic::Ordering::Relaxed);
    if let Some(lim) = open_files_limit().filter(|_| soft != u64::MAX) {
        set_open_files_soft(lim, soft);
    }
}

/// A process's maps now; `None` when it is gone (an exiting process, a zombie, reads as empty:
/// that is no map, not an empty one).
pub(crate) fn read_maps(pid: u32) -> Option<Vec<MapEntry>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let maps = parse_maps(&text);
    (!maps.is_empty()).then_some(maps)
}

/// The pid a process knows itself by (getpid() inside its pid namespace), from its
/// /proc/PID/status: the last of `NStgid:`, which lists it from this namespace inward.
pub(crate) fn ns_tgid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NStgid:"))?
        .split_whitespace()
        .next_back()?
        .parse()
        .ok()
}

/// Checks that `pid` names a live process, and not one of its threads.
pub(crate) fn check_pid(pid: u32) -> Result<()> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|_| anyhow::anyhow!("no such process: {pid} (check the PID with `ps -p {pid}`)"))?;
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .map(|s| s.trim().to_string());
    if let Some(tgid) = tgid.filter(|t| t != &pid.to_string()) {
        bail!("{pid} is a thread of process {tgid}: pass -p {tgid} (or -t {pid} where the tool has it)");
    }
    Ok(())
}

/// Whether `pid` is a kernel thread (PF_KTHREAD in the flags of /proc/PID/stat): it has no
/// user memory, and its /proc/PID/pagemap reads as "No such process".
pub(crate) fn is_kernel_thread(pid: u32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The name, in parentheses, may hold spaces and parentheses itself; flags are the 7th
    // field after it.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(6)?.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// Checks that `tid` names a live thread.
pub(crate) fn check_tid(tid: u32) -> Result<()> {
    if !std::path::Path::new(&format!("/proc/{tid}")).exists() {
        bail!("no such thread: {tid} (check it with `ps -eLf`)");
    }
    Ok(())
}

pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

/// A NUL-padded name from the kernel (a comm, a dentry's basename), as text.
/// A name the kernel cut short in the middle of a UTF-8 character keeps its whole characters.
pub(crate) fn cstr(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    match std::str::from_utf8(&bytes[..end]) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or("?")
        }
        Err(_) => "?",
    }
}

/// Effective capabilities of pfault itself, from /proc/self/status.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Whether pfault may load and attach eBPF programs.
pub(crate) fn check_privileges() -> Result<()> {
    const CAP_SYS_ADMIN: u64 = 21;
    const CAP_PERFMON: u64 = 38;
    const CAP_BPF: u64 = 39;
    let caps = effective_caps();
    let has = |c: u64| caps & (1 << c) != 0;
    if !(has(CAP_SYS_ADMIN) || has(CAP_BPF) && has(CAP_PERFMON)) {
        bail!("needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs: run it with sudo");
    }
    Ok(())
}

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` reads.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Mounts a pseudo file system at `target` unless `probe` (a path inside it) exists already,
/// as root would; says so on stderr. Tracing needs tracefs, `pfault probes` securityfs.
pub(crate) fn ensure_mounted(fstype: &str, target: &str, probe: &str) -> Result<bool> {
    use std::{ffi::CString, path::Path};
    if Path::new(probe).exists() {
        return Ok(false);
    }
    let (src, tgt, fs) = (
        CString::new("nodev")?,
        CString::new(target)?,
        CString::new(fstype)?,
    );
    // SAFETY: valid NUL-terminated strings; no mount data.
    let ret = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if ret != 0 || !Path::new(probe).exists() {
        bail!(
            "{fstype} is not mounted and mounting it failed ({}): run `mount -t {fstype} nodev {target}`",
            std::io::Error::last_os_error()
        );
    }
    eprintln!("pfault: mounted {fstype} at {target}");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse_with_paths_that_hold_spaces() {
        let text = "\
55d0c0a00000-55d0c0a21000 r-xp 00001000 fd:01 1234567                    /usr/bin/my prog (deleted)
7ffd3c1e0000-7ffd3c201000 rw-p 00000000 00:00 0                          [stack]
7f0000000000-7f0000001000 rw-p 00000000 00:00 0
garbage line
";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 3);
        assert_eq!(
            maps[0],
            MapEntry {
                start: 0x55d0c0a00000,
                end: 0x55d0c0a21000,
                file_offset: 0x1000,
                dev: 0xfd << 20 | 1,
                ino: 1234567,
                path: MapPath::File("/usr/bin/my prog (deleted)".into()),
                exec: true,
            }
        );
        assert_eq!(maps[1].path, MapPath::parse("[stack]"));
        assert_eq!(maps[2].path, MapPath::Anonymous);
    }

    #[test]
    fn maps_lines_with_bad_numbers_are_skipped() {
        assert!(parse_maps("zz-10 r-xp 0 fd:01 1 /x\n10-20 r-xp 0 fd 1 /x\n").is_empty());
    }

    /// Lines as a 6.18 kernel writes them (`show_map_vma`: padded to column 73 before the name).
    #[test]
    fn real_maps_lines_parse_to_their_fields() {
        let text = "\
555873b78000-555873b7d000 r-xp 00002000 fe:00 247030                     /usr/bin/cat
55587ee67000-55587ee88000 rw-p 00000000 00:00 0                          [heap]
7f4b51ead000-7f4b51ecf000 rw-p 00000000 00:00 0\x20
7f4b52123000-7f4b52125000 r-xp 00000000 00:00 0                          [vdso]
7ffd3c1e0000-7ffd3c201000 rw-p 00000000 00:00 0                          [stack]
7f4b5211f000-7f4b52123000 rw-p 00000000 00:00 0                          [anon:glibc malloc]
7f62828b1000-7f62828b2000 r--s 00010000 103:03 10010912                  /tmp/pf  sp  (deleted)
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 8, "{maps:?}");
        assert_eq!(
            maps[0],
            MapEntry {
                start: 0x555873b78000,
                end: 0x555873b7d000,
                file_offset: 0x2000,
                dev: 0xfe << 20,
                ino: 247030,
                path: MapPath::File("/usr/bin/cat".into()),
                exec: true,
            }
        );
        assert_eq!(
            (&maps[1].path, maps[1].ino, maps[1].dev),
            (&MapPath::Special("[heap]".into()), 0, 0)
        );
        // An anonymous mapping: the line ends in "0 ", and the path is empty.
        assert_eq!(maps[2].path, MapPath::parse(""));
        assert_eq!(maps[2].end - maps[2].start, 0x22000);
        assert_eq!(maps[3].path, MapPath::parse("[vdso]"));
        assert_eq!(maps[4].path, MapPath::parse("[stack]"));
        assert_eq!(maps[5].path, MapPath::parse("[anon:glibc malloc]"));
        // Runs of spaces in a file's name are the name's own: a file "pf  sp " that was removed.
        assert_eq!(maps[6].path, MapPath::parse("/tmp/pf  sp  (deleted)"));
        assert_eq!(maps[6].dev, 0x103 << 20 | 3);
        assert_eq!(maps[6].file_offset, 0x10000);
        assert_eq!(
            (maps[7].start, maps[7].end),
            (0xffffffffff600000, 0xffffffffff601000)
        );
        assert_eq!(maps[7].path, MapPath::parse("[vsyscall]"));
    }

    #[test]
    fn short_lines_and_empty_text_give_nothing() {
        assert!(parse_maps("").is_empty());
        assert!(parse_maps("\n\n").is_empty());
        assert!(parse_maps("10-20 r-xp 0 fd:01").is_empty());
        // No trailing newline: the last line still counts.
        assert_eq!(parse_maps("10-20 r-xp 0 fd:01 5 /x").len(), 1);
        // A range without its dash, an inode that is not decimal, a number too big for u64.
        assert!(parse_maps("1020 r-xp 0 fd:01 5 /x").is_empty());
        assert!(parse_maps("10-20 r-xp 0 fd:01 0x5 /x").is_empty());
        assert!(parse_maps("10000000000000000-20 r-xp 0 fd:01 5 /x").is_empty());
    }

    #[test]
    fn cstr_keeps_whole_characters_of_a_name_cut_short() {
        // "héé" cut after the first byte of its last "é" (as a 16-byte comm is cut).
        assert_eq!(cstr(b"h\xc3\xa9\xc3"), "hé");
        assert_eq!(cstr(b"h\xc3\xa9\xc3\0\0"), "hé");
        assert_eq!(cstr(b""), "");
        assert_eq!(cstr(b"\0bash"), "");
        // Invalid in the middle is not a cut: the name is unknown.
        assert_eq!(cstr(b"a\xffb\0"), "?");
    }

    #[test]
    fn cstr_stops_at_the_first_nul() {
        assert_eq!(cstr(b"bash\0\0\0junk"), "bash");
        assert_eq!(cstr(b"full"), "full");
        assert_eq!(cstr(&[0xff, 0]), "?");
    }

    #[test]
    fn ns_tgid_is_the_innermost_namespace_s_pid() {
        let status = "Name:\tnode\nTgid:\t4242\nNgid:\t0\nPid:\t4242\nNStgid:\t4242\t7\nNSpid:\t4242\t7\n";
        assert_eq!(ns_tgid(status), Some(7));
        assert_eq!(ns_tgid("NStgid:\t4242\n"), Some(4242));
        // A kernel without pid namespaces writes no such line.
        assert_eq!(ns_tgid("Tgid:\t4242\n"), None);
    }
}
