//! Stacks of programs where production code lives: an overlayfs mount (every container's
//! files), a btrfs subvolume (Fedora's root), a mount namespace with its own loader and C
//! library. `stackcount -U` traces the whole host, started before the program, so nothing
//! about the program is known ahead: its unwind tables are asked for by the kernel side,
//! which names files by the inode the VMA maps (not what `stat` says on overlayfs and btrfs).
//! The workload is built with -O2 -fomit-frame-pointer: a frame-pointer walk from memset does
//! not reach main, only the CFI tables do.

use std::{
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use pfault_tests::*;

/// Pages the workload fills: its faults outnumber its start-up's a thousand to one.
const PAGES: &str = "16384";

/// The name the workload runs under, to pick its stacks among the host's.
const COMM: &str = "ctr_memset";

/// Mounts and loop devices a test made, undone when it ends, passed or failed.
#[derive(Default)]
struct Undo {
    mounts: Vec<PathBuf>,
    loops: Vec<String>,
}

impl Drop for Undo {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg(m).status();
        }
        for l in &self.loops {
            let _ = Command::new("losetup").args(["-d", l]).status();
        }
    }
}

/// Runs a command the test needs to set up; fails the test, saying what to install, when it
/// is missing or fails.
fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (btrfs-progs, util-linux and binutils are needed)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The workload, copied to `dir` under [`COMM`].
fn place_workload(dir: &Path) -> PathBuf {
    let to = dir.join(COMM);
    std::fs::copy(workload("memset_nofp"), &to).unwrap();
    to
}

/// Host-wide `stackcount -U -P` (writing `format` to a file), started before `before` runs
/// and then `workload` (a command that runs the workload with `PAGES wait`): the file, the
/// workload's pid, the faults it counted itself while filling, and pfault's last line (its
/// counts of stacks walked late or left as walked).
fn host_wide(
    name: &str,
    format: &[&str],
    before: impl FnOnce(),
    workload: &mut Command,
) -> (PathBuf, u32, u64, String) {
    let out = scratch(name).join("out");
    // Room for the tables of everything else the host runs, so the workload's fit.
    let pfault = Attached::start(
        pfault()
            .args(["stackcount", "-a", "-U", "-P", "--unwind-mb", "128"])
            .args(format)
            .arg("--output")
            .arg(&out),
    );
    before();
    let (pid, truth) = run_held(workload);
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(pfault.pid() as i32, libc::SIGINT) };
    let stderr = pfault.wait(Duration::from_secs(60));
    let last = stderr.lines().last().unwrap_or_default().to_string();
    (out, pid, num(&truth, "minflt"), last)
}

/// Runs the workload `cmd` with `PAGES wait`: its pid, and what it printed. It fills as soon
/// as it is told, right after its first faults asked for its tables (and the C library's):
/// the stacks that meet them loading are walked from copies.
fn run_held(cmd: &mut Command) -> (u32, std::collections::HashMap<String, String>) {
    let (held, _) = hold(cmd.args([PAGES, "wait"]));
    (held.pid, kv(&held.go()))
}

/// A host-wide run folded: the workload's lines (without its comm and pid), the faults it
/// counted, and pfault's last line.
struct Folded {
    lines: Vec<(String, u64)>,
    minflt: u64,
    last: String,
}

/// [`host_wide`] folded.
fn host_wide_folded(name: &str, before: impl FnOnce(), workload: &mut Command) -> Folded {
    let (out, pid, minflt, last) = host_wide(name, &["--folded"], before, workload);
    let folded = std::fs::read_to_string(&out).unwrap();
    let prefix = format!("{COMM}_[{pid}];");
    let lines = folded_lines(&folded)
        .into_iter()
        .filter_map(|(s, n)| Some((s.strip_prefix(&prefix)?.to_string(), n)))
        .collect();
    Folded { lines, minflt, last }
}

/// At least 99% of the faults the workload counted are on stacks from main through
/// fill_with_memset into memset, whose leaf `memset` names.
fn main_to_memset(run: &Folded, memset: impl Fn(&str) -> bool) {
    let Folded { lines, minflt, last } = run;
    let with: u64 = lines
        .iter()
        .filter(|(s, _)| {
            let (callers, leaf) = s.rsplit_once(';').unwrap_or(("", s));
            callers.ends_with("main;fill_with_memset") && memset(leaf)
        })
        .map(|(_, n)| n)
        .sum();
    eprintln!("{with} of {minflt} faults on main;fill_with_memset;memset; pfault ended: {last}");
    let mut top = lines.clone();
    top.sort_by_key(|b| std::cmp::Reverse(b.1));
    top.truncate(12);
    assert!(
        with * 100 >= minflt * 99 && with <= minflt + 64,
        "{with} faults on main;fill_with_memset;memset of the {minflt} the workload counted; \
         pfault ended: {last}; its most common stacks:\n{top:#?}"
    );
}

fn host_memset(leaf: &str) -> bool {
    leaf.starts_with("__memset")
}

#[test]
fn a_program_on_overlayfs_unwinds_to_main() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("containers-overlay");
    let (lower, upper, work, merged) = (
        dir.join("lower"),
        dir.join("upper"),
        dir.join("work"),
        dir.join("merged"),
    );
    for d in [&lower, &upper, &work, &merged] {
        std::fs::create_dir_all(d).unwrap();
    }
    place_workload(&lower);
    let mut undo = Undo::default();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    sh(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged));
    undo.mounts.push(merged.clone());
    let run = host_wide_folded(
        "containers-overlay-run",
        || {},
        &mut Command::new(merged.join(COMM)),
    );
    main_to_memset(&run, host_memset);
}

#[test]
fn a_program_in_a_btrfs_subvolume_unwinds_to_main() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("containers-btrfs");
    let image = dir.join("btrfs.img");
    std::fs::File::create(&image).unwrap().set_len(256 << 20).unwrap();
    let mut undo = Undo::default();
    let dev = sh(Command::new("losetup").args(["-f", "--show"]).arg(&image));
    undo.loops.push(dev.clone());
    sh(Command::new("mkfs.btrfs").args(["-q", &dev]));
    let top = dir.join("top");
    std::fs::create_dir_all(&top).unwrap();
    sh(Command::new("mount").arg(&dev).arg(&top));
    undo.mounts.push(top.clone());
    let sub = top.join("sub");
    sh(Command::new("btrfs").args(["subvolume", "create"]).arg(&sub));
    let program = place_workload(&sub);
    let run = host_wide_folded("containers-btrfs-run", || {}, &mut Command::new(program));
    main_to_memset(&run, host_memset);
}

/// A binary run, deleted, and rebuilt at its path while pfault runs: a file system that hands
/// the old inode number to the new file (ext4 does, at once) must not get the new binary the
/// old one's table, or the old one's names. The old binary walks main -> walk_pages ->
/// touch_pages_nofp, the new one main -> fill_with_memset -> memset.
#[test]
fn a_binary_rebuilt_in_place_gets_its_own_table() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("containers-rebuilt");
    let program = dir.join(COMM);
    std::fs::copy(workload("omit_fp"), &program).unwrap();
    // Compiled before pfault starts, not where it is placed: compiled under the trace, cc1's
    // table (478,576 rows) is built ahead of the workload's, whose stacks meanwhile outrun
    // the ring buffer's room for copies and are left as the kernel side walked them (seen:
    // 10,736 of 16,386, said on the end line).
    workload("memset_nofp");
    let old_ino = std::fs::metadata(&program).unwrap().ino();
    let run = host_wide_folded(
        "containers-rebuilt-run",
        || {
            let (_, truth) = run_held(&mut Command::new(&program));
            assert!(num(&truth, "minflt") > 0);
            std::fs::remove_file(&program).unwrap();
            place_workload(&dir);
        },
        &mut Command::new(&program),
    );
    let new_ino = std::fs::metadata(&program).unwrap().ino();
    eprintln!("the old binary's inode {old_ino}, the new one's {new_ino}");
    main_to_memset(&run, host_memset);
}

/// The path of a file the test itself maps, the first that `is` picks.
fn own_mapped(is: impl Fn(&str) -> bool) -> PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let path = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| is(p))
        .unwrap_or_else(|| panic!("not in the test's maps:\n{maps}"));
    PathBuf::from(path)
}

/// The bytes of a C string for a system call.
fn c(path: &Path) -> std::ffi::CString {
    std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap()
}

#[test]
fn a_program_in_a_mount_namespace_with_its_own_libc_is_named_from_it() {
    if !root_or_skip() {
        return;
    }
    let dir = scratch("containers-mntns");
    let libc_path = own_mapped(|p| p.ends_with("/libc.so.6"));
    let loader_path = own_mapped(|p| p.contains("/ld-linux"));
    // The container's C library: the host's code (and CFI), but its own symbol table, whose
    // one symbol names all of its code, and no link to the host's debug file. Its frames named
    // from the host's file (at the same path) read __memset_*.
    let own_libc = dir.join("libc.so.6");
    sh(Command::new("objcopy")
        .args([
            "--remove-section",
            ".gnu_debuglink",
            "--add-symbol",
            "pfault_container_libc=.text:0,function,global",
        ])
        .arg(&libc_path)
        .arg(&own_libc));
    // And a build id of its own, which pprof's mapping of it carries.
    let host_id = build_id(&libc_path);
    let own_id = edit_build_id(&own_libc, &host_id);
    let own_loader = dir.join("ld.so");
    std::fs::copy(&loader_path, &own_loader).unwrap();
    let program = place_workload(&dir);
    let binds = [(c(&own_libc), c(&libc_path)), (c(&own_loader), c(&loader_path))];
    let in_namespace = || {
        let binds = binds.clone();
        let mut cmd = Command::new(&program);
        // SAFETY: only system calls between fork and exec, on strings made before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fail = || Err(std::io::Error::last_os_error());
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return fail();
                }
                let root = c"/";
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return fail();
                }
                for (from, to) in &binds {
                    if libc::mount(
                        from.as_ptr(),
                        to.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        return fail();
                    }
                }
                Ok(())
            });
        }
        cmd
    };
    // Its mounts go with the namespace when the workload exits: nothing to undo.
    let run = host_wide_folded("containers-mntns-run", || {}, &mut in_namespace());
    main_to_memset(&run, |leaf| leaf == "pfault_container_libc");
    let (profile, ..) = host_wide(
        "containers-mntns-pprof",
        &["-o", "pprof"],
        || {},
        &mut in_namespace(),
    );
    let raw = Command::new("go")
        .args(["tool", "pprof", "-raw"])
        .arg(&profile)
        .output()
        .expect("go tool pprof");
    let raw = String::from_utf8_lossy(&raw.stdout);
    let libc_name = libc_path.to_string_lossy();
    assert!(
        raw.lines()
            .any(|l| l.contains(&*libc_name) && l.split_whitespace().nth(3) == Some(&own_id)),
        "no mapping of {libc_name} with the container's build id {own_id} (the host's is {host_id}):\n{raw}"
    );
}

/// The GNU build id of an ELF file, in hex, as `readelf -n` prints it.
fn build_id(path: &Path) -> String {
    let notes = sh(Command::new("readelf").arg("-n").arg(path));
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("no build id in {path:?}:\n{notes}"))
        .to_string()
}

/// Gives the ELF file at `path`, whose build id is `id`, another one; returns it.
fn edit_build_id(path: &Path, id: &str) -> String {
    let bytes: Vec<u8> = (0..id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&id[i..i + 2], 16).unwrap())
        .collect();
    let mut data = std::fs::read(path).unwrap();
    let at = data
        .windows(bytes.len())
        .position(|w| w == bytes)
        .unwrap_or_else(|| panic!("build id {id} not in {path:?}"));
    let last = at + bytes.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(path, &data).unwrap();
    build_id(path)
}
