//! `cargo xtask vm-test`: pfault on a second kernel under qemu.
//!
//! The host kernel refuses fentry and has no kprobes, so pfault's `handle_mm_fault` paths
//! run only here: Debian's 6.1 cloud kernel, booted under TCG (nested KVM hangs on this kind
//! of machine) with an initramfs of busybox, pfault and the workloads, and a small ext4 disk
//! whose page cache can be dropped, for major faults. The guest (`vm/init.sh`) checks every
//! probe mode against the workloads' getrusage and reports on the console; this side prints
//! its checks and fails when one failed or the guest did not finish.

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::{BufRead, BufReader, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{build_pfault, root, say, sh, toolchain};

const INIT: &str = include_str!("../vm/init.sh");
const RUN_WORKLOADS: &str = include_str!("../vm/workloads.sh");

/// The guest runs about a minute under TCG; past this it has hung.
const GUEST_TIMEOUT: Duration = Duration::from_secs(240);

/// Debian's packages of the 6.1 cloud kernel are `linux-image-6.1.0-ABI-cloud-amd64-unsigned`.
const KERNEL_PREFIX: &str = "linux-image-6.1.0-";
const KERNEL_SUFFIX: &str = "-cloud-amd64-unsigned";

/// What the guest needs of the kernel's modules: the virtio disk and its file system. Those
/// built into the kernel are skipped.
const MODULES: &[&str] = &["virtio_pci", "virtio_blk", "ext4"];

const WORKLOADS: &[&str] = &[
    "anon_writer",
    "file_reader",
    "segv",
    "many_stacks",
    "memset_caller",
    "omit_fp",
];

/// Pages of the file the guest reads for major faults (`/data/data.bin`).
const DATA_PAGES: usize = 2048;

/// Prefix of the lines the guest speaks to this side in (see `vm/init.sh`).
const MARK: &str = "@@vm ";

pub fn run() -> Result<()> {
    let started = Instant::now();
    toolchain::ensure_packages(&[
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("cpio", "cpio"),
        ("mkfs.ext4", "e2fsprogs"),
        ("cc", "gcc"),
    ])?;
    let kernel = ensure_kernel()?;
    let pfault = build_pfault()?;
    let dir = root().join("target/vm-test");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let initramfs = build_initramfs(&dir, &kernel, &pfault)?;
    let disk = build_disk(&dir)?;
    say(format!(
        "booting {} under qemu TCG (at most {} s)",
        kernel.release,
        GUEST_TIMEOUT.as_secs()
    ));
    let log = dir.join("console.log");
    let tally = boot(&kernel, &initramfs, &disk, &log)?;
    println!("{} passed, {} failed", tally.passed, tally.failed);
    say(format!(
        "vm-test took {:.0} s (guest console in {})",
        started.elapsed().as_secs_f64(),
        log.display()
    ));
    if tally.failed > 0 {
        bail!("vm-test: {} check(s) failed", tally.failed);
    }
    Ok(())
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into())
}

/// An unpacked kernel package.
struct Kernel {
    release: String,
    vmlinuz: PathBuf,
    /// `lib/modules/RELEASE`.
    modules: PathBuf,
}

/// The package's ABI number, by which newer packages sort higher.
fn kernel_abi(package: &str) -> Option<u32> {
    package
        .strip_prefix(KERNEL_PREFIX)?
        .strip_suffix(KERNEL_SUFFIX)?
        .parse()
        .ok()
}

/// The kernel package unpacked under `~/.cache/pfault/vm` (which `cargo clean` leaves alone),
/// fetched the first time.
fn ensure_kernel() -> Result<Kernel> {
    let cache = home().join(".cache/pfault/vm");
    if let Some(k) = cached_kernel(&cache) {
        return Ok(k);
    }
    let package = newest_kernel_package()?;
    say(format!("fetching {package} into {}", cache.display()));
    let download = cache.join("download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download)?;
    // As root, apt's sandbox user cannot write here; downloading as root is what it falls back to.
    sh(Command::new("apt-get").current_dir(&download).args([
        "download",
        "-qq",
        "-o",
        "APT::Sandbox::User=root",
        &package,
    ]))?;
    let deb = fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    // Unpacked aside and renamed, so an interrupted run leaves nothing that looks complete.
    let partial = cache.join("partial");
    let _ = fs::remove_dir_all(&partial);
    sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    fs::rename(&partial, cache.join(&package))?;
    fs::remove_dir_all(&download)?;
    cached_kernel(&cache).context("the unpacked kernel package has no boot/vmlinuz-* or lib/modules/*")
}

fn cached_kernel(cache: &Path) -> Option<Kernel> {
    let (_, dir) = fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| Some((kernel_abi(&p.file_name()?.to_string_lossy())?, p)))
        .max()?;
    let first_in = |d: &Path, prefix: &str| -> Option<PathBuf> {
        fs::read_dir(d)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
    };
    let vmlinuz = first_in(&dir.join("boot"), "vmlinuz-")?;
    let modules = first_in(&dir.join("lib/modules"), "")?;
    let release = modules.file_name()?.to_string_lossy().into_owned();
    Some(Kernel {
        release,
        vmlinuz,
        modules,
    })
}

fn newest_kernel_package() -> Result<String> {
    for refresh in [false, true] {
        if refresh {
            say("apt knows no 6.1 cloud kernel yet: running apt-get update");
            sh(Command::new("apt-get").args(["update", "-qq"]))?;
        }
        let out = Command::new("apt-cache")
            .args(["search", "--names-only"])
            .arg(format!("^{KERNEL_PREFIX}.*{KERNEL_SUFFIX}$"))
            .output()
            .context("running apt-cache")?;
        let newest = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|p| Some((kernel_abi(p)?, p.to_string())))
            .max();
        if let Some((_, package)) = newest {
            return Ok(package);
        }
    }
    bail!("apt has no {KERNEL_PREFIX}N{KERNEL_SUFFIX} package (Debian bookworm's 6.1 cloud kernel)")
}

/// Every file and directory under `dir`, parents before their contents.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for p in entries {
        out.push(p.clone());
        if p.is_dir() && !p.is_symlink() {
            walk(&p, out)?;
        }
    }
    Ok(())
}

/// `a-b.ko` is module `a_b`.
fn module_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .trim_end_matches(".ko")
        .replace('-', "_")
}

/// The `depends=` of a module's `.modinfo`.
fn module_depends(ko: &Path) -> Result<Vec<String>> {
    let bytes = fs::read(ko).with_context(|| format!("reading {}", ko.display()))?;
    let key = b"\0depends=";
    let Some(at) = bytes.windows(key.len()).position(|w| w == key) else {
        return Ok(Vec::new());
    };
    let value = &bytes[at + key.len()..];
    let value = &value[..value.iter().position(|&b| b == 0).unwrap_or(value.len())];
    Ok(String::from_utf8_lossy(value)
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect())
}

/// The `.ko` files the guest must insmod for `wanted`, dependencies first (busybox's insmod
/// resolves nothing, and the package has no modules.dep: depmod makes it on install).
fn modules_to_load(kernel: &Kernel, wanted: &[&str]) -> Result<Vec<PathBuf>> {
    let builtin: HashSet<String> = fs::read_to_string(kernel.modules.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(|l| module_name(Path::new(l)))
        .collect();
    let mut all = Vec::new();
    walk(&kernel.modules.join("kernel"), &mut all)?;
    let files: HashMap<String, PathBuf> = all
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "ko"))
        .map(|p| (module_name(&p), p))
        .collect();
    fn visit(
        name: &str,
        builtin: &HashSet<String>,
        files: &HashMap<String, PathBuf>,
        order: &mut Vec<PathBuf>,
    ) -> Result<()> {
        if builtin.contains(name) {
            return Ok(());
        }
        let ko = files
            .get(name)
            .with_context(|| format!("the kernel has no module {name} (nor builds it in)"))?;
        if order.contains(ko) {
            return Ok(());
        }
        for dep in module_depends(ko)? {
            visit(&dep, builtin, files, order)?;
        }
        order.push(ko.clone());
        Ok(())
    }
    let mut order = Vec::new();
    for name in wanted {
        visit(name, &builtin, &files, &mut order)?;
    }
    Ok(order)
}

/// Copies a binary and the libraries `ldd` names to the same paths under `tree`.
fn install_binary(tree: &Path, bin: &Path, at: &str) -> Result<()> {
    let out = Command::new("ldd").arg(bin).output().context("running ldd")?;
    // A static binary makes ldd fail and name nothing, as it should.
    let libs: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    for (from, to) in libs
        .iter()
        .map(|l| (l.as_path(), tree.join(l.strip_prefix("/").unwrap())))
        .chain([(bin, tree.join(at))])
    {
        fs::create_dir_all(to.parent().unwrap())?;
        fs::copy(from, &to).with_context(|| format!("copying {} into the initramfs", from.display()))?;
    }
    Ok(())
}

fn which(cmd: &str) -> Result<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
        .with_context(|| format!("{cmd} is not on PATH"))
}

/// The guest's root: busybox, pfault and its libraries, the workloads (static) with
/// `vm/workloads.sh` as `/w/run`, the modules for the disk with their load order, and
/// `vm/init.sh` as `/init`.
fn build_initramfs(dir: &Path, kernel: &Kernel, pfault: &Path) -> Result<PathBuf> {
    let tree = dir.join("initramfs");
    for d in ["bin", "dev", "proc", "sys", "tmp", "w", "modules"] {
        fs::create_dir_all(tree.join(d))?;
    }
    install_binary(&tree, &which("busybox")?, "bin/busybox")?;
    install_binary(&tree, pfault, "bin/pfault")?;
    for w in WORKLOADS {
        let src = root().join("tests/workloads").join(format!("{w}.c"));
        sh(Command::new("cc")
            .args(pfault_tests::workload_cflags(&src))
            .arg("-static")
            .arg("-o")
            .arg(tree.join("w").join(w))
            .arg(src))?;
    }
    let mut order = String::new();
    for ko in modules_to_load(kernel, MODULES)? {
        let name = module_name(&ko);
        fs::copy(&ko, tree.join("modules").join(format!("{name}.ko")))?;
        order.push_str(&name);
        order.push('\n');
    }
    fs::write(tree.join("modules/order"), order)?;
    for (path, script) in [("init", INIT), ("w/run", RUN_WORKLOADS)] {
        fs::write(tree.join(path), script)?;
        fs::set_permissions(tree.join(path), fs::Permissions::from_mode(0o755))?;
    }
    let mut entries = Vec::new();
    walk(&tree, &mut entries)?;
    let list: String = entries
        .iter()
        .map(|p| format!("{}\n", p.strip_prefix(&tree).unwrap().display()))
        .collect();
    let image = dir.join("initramfs.cpio");
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&tree)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&image)?)
        .spawn()
        .context("running cpio")?;
    cpio.stdin.take().unwrap().write_all(list.as_bytes())?;
    if !cpio.wait()?.success() {
        bail!("cpio failed building {}", image.display());
    }
    Ok(image)
}

/// An ext4 image holding `data.bin`. No journal: the guest mounts it read-only.
fn build_disk(dir: &Path) -> Result<PathBuf> {
    let content = dir.join("disk");
    fs::create_dir_all(&content)?;
    let bytes: Vec<u8> = (0..DATA_PAGES * 4096).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(content.join("data.bin"), bytes)?;
    let image = dir.join("disk.img");
    let size_mb = DATA_PAGES * 4096 / (1 << 20) + 16;
    // Quiet, but for the "Creating regular file" that -d says anyway.
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "^has_journal", "-d"])
        .arg(&content)
        .arg(&image)
        .arg(format!("{size_mb}M"))
        .stdout(Stdio::null()))?;
    Ok(image)
}

/// The console line without terminal control sequences (SeaBIOS clears the screen).
fn printable(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

#[derive(Default)]
struct Tally {
    passed: u32,
    failed: u32,
}

impl Tally {
    fn check(&mut self, mode: &str, tool: &str, result: &str, text: &str) {
        match result {
            "pass" => self.passed += 1,
            _ => self.failed += 1,
        }
        println!("{mode:<11}{tool:<11}{result:<5} {text}");
    }
}

/// Boots the guest, prints its checks as they come, and counts them. A guest that stops
/// before saying it is done, or outlives [`GUEST_TIMEOUT`], is one more failure, shown with
/// its whole console.
fn boot(kernel: &Kernel, initramfs: &Path, disk: &Path, log: &Path) -> Result<Tally> {
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "2G",
            "-smp",
            "2",
            "-no-reboot",
            "-nographic",
            "-nic",
            "none",
        ])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet", "-drive"])
        .arg(format!(
            "file={},format=raw,if=virtio,readonly=on",
            disk.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let (tx, rx) = mpsc::channel();
    let mut stdout = BufReader::new(qemu.stdout.take().unwrap());
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        while stdout.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            if tx.send(printable(&String::from_utf8_lossy(&buf))).is_err() {
                break;
            }
            buf.clear();
        }
    });
    let mut console = Vec::new();
    let mut log_file = fs::File::create(log)?;
    let mut tally = Tally::default();
    let mut done = false;
    let mut deadline = Instant::now() + GUEST_TIMEOUT;
    let ending = loop {
        let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = qemu.kill();
                qemu.wait()?;
                break format!("did not finish within {} s", GUEST_TIMEOUT.as_secs());
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break format!("stopped before finishing (qemu: {})", qemu.wait()?);
            }
        };
        writeln!(log_file, "{line}")?;
        // Kernel messages may share the line the guest's words start in.
        if let Some(at) = line.find(MARK) {
            let words = &line[at + MARK.len()..];
            let mut w = words.splitn(5, ' ');
            match w.next() {
                Some("check") => {
                    let (mode, tool, result) = (w.next(), w.next(), w.next());
                    let text = w.next().unwrap_or("");
                    tally.check(
                        mode.unwrap_or("?"),
                        tool.unwrap_or("?"),
                        result.unwrap_or("?"),
                        text,
                    );
                }
                Some("note") => println!("{:26}{}", "", words.trim_start_matches("note ")),
                Some("done") => {
                    done = true;
                    // Only the power-off is left.
                    deadline = deadline.min(Instant::now() + Duration::from_secs(30));
                }
                _ => {}
            }
        }
        console.push(line);
    };
    if !done {
        tally.check("-", "vm", "fail", &format!("the guest {ending}; its console:"));
        for line in &console {
            println!("    {line}");
        }
    }
    Ok(tally)
}
