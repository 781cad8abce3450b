//! `cargo xtask vm-test`: pfault on the long-term-support kernels SREs run, under qemu.
//!
//! The host kernel refuses fentry and has no kprobes, so pfault's `handle_mm_fault` paths
//! run only here: Debian's cloud kernels (5.10, 6.1, 6.12), each booted under TCG (nested KVM
//! hangs on this kind of machine) with an initramfs of busybox, pfault and the workloads, and
//! a small ext4 disk whose page cache can be dropped, for major faults. The guest
//! (`vm/init.sh`) checks every probe mode against the workloads' getrusage and reports on the
//! console; this side prints its checks, one closing line per kernel, and fails when a check
//! failed or a guest did not finish.

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

use crate::{
    artifacts::{build_pfault, workload_into, Link},
    shell::{home, root, say, sh, which},
    toolchain,
};

const INIT: &str = include_str!("../vm/init.sh");
const RUN_WORKLOADS: &str = include_str!("../vm/workloads.sh");

/// Several times what a guest takes under TCG on this kind of machine (80 s for 5.10, the
/// slowest, on a quiet one; 160 s beside builds on both cores): past this it has hung.
const GUEST_TIMEOUT: Duration = Duration::from_secs(480);

/// A Debian kernel series: its packages are `PREFIX` N `SUFFIX`, the newest N the one booted.
pub struct Series {
    choice: Choice,
    prefix: &'static str,
    suffix: &'static str,
}

/// The cloud kernels (no drivers for real hardware: small, and quick to boot) of Debian 11,
/// 12 and 13.
const SERIES: [Series; 3] = [
    Series {
        choice: Choice::V5_10,
        prefix: "linux-image-5.10.0-",
        suffix: "-cloud-amd64-unsigned",
    },
    Series {
        choice: Choice::V6_1,
        prefix: "linux-image-6.1.0-",
        suffix: "-cloud-amd64-unsigned",
    },
    Series {
        choice: Choice::V6_12,
        prefix: "linux-image-6.12.",
        suffix: "+deb13-cloud-amd64-unsigned",
    },
];

/// Where the kernels come from: the suites of Debian 11, 12 and 13, with their updates (the
/// newest kernels are security updates). apt reads this list alone, into lists of its own.
const SOURCES: &str = "\
deb http://deb.debian.org/debian bullseye main
deb http://deb.debian.org/debian-security bullseye-security main
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
deb http://deb.debian.org/debian trixie main
deb http://deb.debian.org/debian trixie-updates main
deb http://deb.debian.org/debian-security trixie-security main
";

/// `--kernel`'s values.
#[derive(Clone, Copy, PartialEq, Debug, clap::ValueEnum)]
enum Choice {
    #[value(name = "5.10")]
    V5_10,
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    /// Every series (the default).
    All,
}

impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let value = clap::ValueEnum::to_possible_value(self).unwrap();
        f.write_str(value.get_name())
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// The Debian kernels to boot, one after the other (comma-separated or repeated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Choice::All])]
    kernel: Vec<Choice>,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            kernel: vec![Choice::All],
        }
    }
}

impl Args {
    /// The series chosen, each once, oldest first.
    fn series(&self) -> Vec<&'static Series> {
        let all = self.kernel.contains(&Choice::All);
        SERIES
            .iter()
            .filter(|s| all || self.kernel.contains(&s.choice))
            .collect()
    }
}

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
    "big_frame",
    "realign",
    "saved_rsp",
    "moved_ra",
    "same_leaf",
    "thp_writer",
    "big_cfi",
];

/// Pages of the file the guest reads for major faults (`/data/data.bin`).
const DATA_PAGES: usize = 2048;

/// Prefix of the lines the guest speaks to this side in (see `vm/init.sh`).
const MARK: &str = "@@vm ";

pub fn run(args: &Args) -> Result<()> {
    toolchain::ensure_packages(&[
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("cpio", "cpio"),
        ("mkfs.ext4", "e2fsprogs"),
        ("cc", "gcc"),
        ("xz", "xz-utils"),
    ])?;
    let pfault = build_pfault()?;
    let dir = root().join("target/vm-test");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let workloads = WORKLOADS
        .iter()
        .map(|w| workload_into(w, Link::Static, &dir.join("workloads")))
        .collect::<Result<Vec<_>>>()?;
    let disk = build_disk(&dir)?;
    let mut apt = Apt::new();
    let mut closing = Vec::new();
    let mut failed = 0;
    for series in args.series() {
        let started = Instant::now();
        let kernel = ensure_kernel(series, &mut apt)?;
        let kdir = dir.join(series.choice.to_string());
        fs::create_dir_all(&kdir)?;
        let initramfs = build_initramfs(&kdir, &kernel, &pfault, &workloads)?;
        say(format!(
            "booting {} under qemu TCG (at most {} s)",
            kernel.release,
            GUEST_TIMEOUT.as_secs()
        ));
        let log = kdir.join("console.log");
        let tally = boot(&kernel, &initramfs, &disk, &log)?;
        let line = format!(
            "kernel {}: {} passed, {} failed",
            kernel.release, tally.passed, tally.failed
        );
        println!("{line}");
        say(format!(
            "{} took {:.0} s (guest console in {})",
            kernel.release,
            started.elapsed().as_secs_f64(),
            log.display()
        ));
        closing.push(line);
        failed += tally.failed;
    }
    // Together at the end, where a run of several kernels is read.
    if closing.len() > 1 {
        for line in &closing {
            println!("{line}");
        }
    }
    if failed > 0 {
        bail!("vm-test: {failed} check(s) failed");
    }
    Ok(())
}

/// An unpacked kernel package.
struct Kernel {
    release: String,
    vmlinuz: PathBuf,
    /// `lib/modules/RELEASE` (`usr/lib/modules/RELEASE` from Debian 13 on).
    modules: PathBuf,
}

impl Series {
    /// The package's number, by which newer packages sort higher.
    fn number(&self, package: &str) -> Option<u32> {
        package
            .strip_prefix(self.prefix)?
            .strip_suffix(self.suffix)?
            .parse()
            .ok()
    }
}

/// apt with a sources list, package lists and cache of its own, under `~/.cache/pfault/vm/apt`:
/// the machine's apt state is neither read nor changed.
struct Apt {
    dir: PathBuf,
    updated: bool,
}

impl Apt {
    fn new() -> Apt {
        Apt {
            dir: cache().join("apt"),
            updated: false,
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        for option in [
            format!("Dir::Etc::sourcelist={}", d("sources.list")),
            "Dir::Etc::sourceparts=-".into(),
            format!("Dir::State::Lists={}", d("lists")),
            format!("Dir::Cache={}", d("cache")),
            // As root, apt's sandbox user cannot write here; root is what it falls back to.
            "APT::Sandbox::User=root".into(),
        ] {
            c.arg("-o").arg(option);
        }
        c
    }

    /// The packages of `series`, newest first, the lists fetched first (once a run).
    fn packages(&mut self, series: &Series) -> Result<Vec<String>> {
        if !self.updated {
            for sub in ["lists/partial", "cache/archives/partial"] {
                fs::create_dir_all(self.dir.join(sub))?;
            }
            fs::write(self.dir.join("sources.list"), SOURCES)?;
            say("fetching the package lists of Debian 11, 12 and 13 (apt-get update, private lists)");
            sh(self.command("apt-get").args(["update", "-qq"]))?;
            self.updated = true;
        }
        let out = self
            .command("apt-cache")
            .args(["search", "--names-only", "cloud-amd64-unsigned$"])
            .output()
            .context("running apt-cache")?;
        let mut packages: Vec<(u32, String)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|p| Some((series.number(p)?, p.to_string())))
            .collect();
        if packages.is_empty() {
            bail!(
                "Debian's archive has no {}N{} package (the {} cloud kernel)",
                series.prefix,
                series.suffix,
                series.choice
            );
        }
        packages.sort_unstable_by(|a, b| b.cmp(a));
        Ok(packages.into_iter().map(|(_, p)| p).collect())
    }

    /// Downloads `package` into `dir`; the .deb's path.
    fn download(&self, package: &str, dir: &Path) -> Result<PathBuf> {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir)?;
        sh(self
            .command("apt-get")
            .current_dir(dir)
            .args(["download", "-qq", package]))?;
        fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .context("apt-get download left no .deb")
    }
}

/// Where kernels are kept unpacked (`cargo clean` leaves it alone).
fn cache() -> PathBuf {
    home().join(".cache/pfault/vm")
}

/// The newest kernel of `series` unpacked in the cache, fetched the first time.
fn ensure_kernel(series: &Series, apt: &mut Apt) -> Result<Kernel> {
    let cache = cache();
    if let Some(k) = cached_kernel(&cache, series) {
        return Ok(k);
    }
    let download = cache.join("download");
    // A mirror may list a package it no longer serves (a security update replaced on the
    // way): the newest that downloads.
    let mut fetched = None;
    for package in apt.packages(series)? {
        say(format!("fetching {package} into {}", cache.display()));
        match apt.download(&package, &download) {
            Ok(deb) => {
                fetched = Some((package, deb));
                break;
            }
            Err(e) => say(format!("{e:#}: trying an older {} kernel", series.choice)),
        }
    }
    let (package, deb) =
        fetched.with_context(|| format!("no {} kernel package could be downloaded", series.choice))?;
    // Unpacked aside and renamed, so an interrupted run leaves nothing that looks complete.
    let partial = cache.join("partial");
    let _ = fs::remove_dir_all(&partial);
    sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    fs::rename(&partial, cache.join(&package))?;
    fs::remove_dir_all(&download)?;
    cached_kernel(&cache, series)
        .context("the unpacked kernel package has no boot/vmlinuz-* or lib/modules/*")
}

fn cached_kernel(cache: &Path, series: &Series) -> Option<Kernel> {
    let (_, dir) = fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| Some((series.number(&p.file_name()?.to_string_lossy())?, p)))
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
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .find_map(|d| first_in(&dir.join(d), ""))?;
    let release = modules.file_name()?.to_string_lossy().into_owned();
    Some(Kernel {
        release,
        vmlinuz,
        modules,
    })
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

/// `a-b.ko` (or `a-b.ko.xz`) is module `a_b`.
fn module_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .trim_end_matches(".xz")
        .trim_end_matches(".ko")
        .replace('-', "_")
}

/// A module file's contents, uncompressed: busybox's insmod reads no xz.
fn module_bytes(ko: &Path) -> Result<Vec<u8>> {
    if ko.extension().is_some_and(|x| x == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(ko)
            .output()
            .context("running xz")?;
        if !out.status.success() {
            bail!("xz -dc {} failed ({})", ko.display(), out.status);
        }
        return Ok(out.stdout);
    }
    fs::read(ko).with_context(|| format!("reading {}", ko.display()))
}

/// The `depends=` of a module's `.modinfo`.
fn module_depends(bytes: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(at) = bytes.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let value = &bytes[at + key.len()..];
    let value = &value[..value.iter().position(|&b| b == 0).unwrap_or(value.len())];
    String::from_utf8_lossy(value)
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect()
}

/// A module for the guest to insmod: its name and its uncompressed contents.
struct Module {
    name: String,
    bytes: Vec<u8>,
}

/// The modules the guest must insmod for `wanted`, dependencies first (busybox's insmod
/// resolves nothing, and the package has no modules.dep: depmod makes it on install).
fn modules_to_load(kernel: &Kernel, wanted: &[&str]) -> Result<Vec<Module>> {
    let builtin: HashSet<String> = fs::read_to_string(kernel.modules.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(|l| module_name(Path::new(l)))
        .collect();
    let mut all = Vec::new();
    walk(&kernel.modules.join("kernel"), &mut all)?;
    let files: HashMap<String, PathBuf> = all
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.ends_with(".ko") || name.ends_with(".ko.xz")
        })
        .map(|p| (module_name(&p), p))
        .collect();
    fn visit(
        name: &str,
        builtin: &HashSet<String>,
        files: &HashMap<String, PathBuf>,
        order: &mut Vec<Module>,
    ) -> Result<()> {
        if builtin.contains(name) || order.iter().any(|m| m.name == name) {
            return Ok(());
        }
        let ko = files
            .get(name)
            .with_context(|| format!("the kernel has no module {name} (nor builds it in)"))?;
        let bytes = module_bytes(ko)?;
        for dep in module_depends(&bytes) {
            visit(&dep, builtin, files, order)?;
        }
        order.push(Module {
            name: name.to_string(),
            bytes,
        });
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

/// The guest's root: busybox, pfault and its libraries, the workloads (static) with
/// `vm/workloads.sh` as `/w/run`, the modules for the disk with their load order, and
/// `vm/init.sh` as `/init`.
fn build_initramfs(dir: &Path, kernel: &Kernel, pfault: &Path, workloads: &[PathBuf]) -> Result<PathBuf> {
    let tree = dir.join("initramfs");
    for d in ["bin", "dev", "proc", "sys", "tmp", "w", "modules"] {
        fs::create_dir_all(tree.join(d))?;
    }
    install_binary(&tree, &which("busybox")?, "bin/busybox")?;
    install_binary(&tree, pfault, "bin/pfault")?;
    for w in workloads {
        fs::copy(w, tree.join("w").join(w.file_name().unwrap()))?;
    }
    let mut order = String::new();
    for m in modules_to_load(kernel, MODULES)? {
        fs::write(tree.join("modules").join(format!("{}.ko", m.name)), &m.bytes)?;
        order.push_str(&m.name);
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

/// The guest's `TYPE:N` per program as a line: instructions verified, by program type.
fn verified(programs: &str) -> String {
    let programs: Vec<(&str, &str)> = programs
        .split_whitespace()
        .filter_map(|p| p.split_once(':'))
        .collect();
    if programs.is_empty() {
        return "no BPF programs seen".into();
    }
    if programs.iter().any(|(_, n)| n.parse::<u64>().is_err()) {
        return format!(
            "{} programs; this kernel shows no verified_insns (5.16+)",
            programs.len()
        );
    }
    let total: u64 = programs.iter().filter_map(|(_, n)| n.parse::<u64>().ok()).sum();
    let each: Vec<String> = programs
        .iter()
        .map(|(t, n)| format!("{} {n}", prog_type(t)))
        .collect();
    format!("insns verified {total} ({})", each.join(", "))
}

/// The names of the program types pfault loads (`enum bpf_prog_type`).
fn prog_type(number: &str) -> &str {
    match number {
        "2" => "kprobe",
        "5" => "tracepoint",
        "7" => "perf_event",
        "17" => "raw_tracepoint",
        "26" => "tracing",
        other => other,
    }
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
                Some("insns") => {
                    let (mode, tool) = (w.next().unwrap_or("?"), w.next().unwrap_or("?"));
                    let (startup, programs): (Vec<&str>, Vec<&str>) =
                        w.partition(|p| p.starts_with("startup="));
                    let startup = startup
                        .first()
                        .map(|s| format!("; -d 0 in {} s under TCG", s.trim_start_matches("startup=")))
                        .unwrap_or_default();
                    println!("{mode:<11}{tool:<11}{}{startup}", verified(&programs.join(" ")));
                }
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Args;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn names(argv: &[&str]) -> Vec<String> {
        let args = Cli::parse_from(["vm-test"].iter().chain(argv)).args;
        args.series().iter().map(|s| s.choice.to_string()).collect()
    }

    /// `cargo xtask test` boots what `vm-test` alone does: every series.
    #[test]
    fn kernels_chosen() {
        assert_eq!(names(&[]), ["5.10", "6.1", "6.12"]);
        let default: Vec<String> = Args::default()
            .series()
            .iter()
            .map(|s| s.choice.to_string())
            .collect();
        assert_eq!(default, ["5.10", "6.1", "6.12"]);
        assert_eq!(names(&["--kernel", "all"]), ["5.10", "6.1", "6.12"]);
        assert_eq!(names(&["--kernel", "6.12,5.10,6.12"]), ["5.10", "6.12"]);
    }

    #[test]
    fn package_numbers() {
        let [v510, v61, v612] = &super::SERIES;
        assert_eq!(
            v510.number("linux-image-5.10.0-32-cloud-amd64-unsigned"),
            Some(32)
        );
        assert_eq!(v61.number("linux-image-6.1.0-57-cloud-amd64-unsigned"), Some(57));
        // Backports of 6.1 to Debian 11 are not Debian 12's kernel.
        assert_eq!(
            v61.number("linux-image-6.1.0-0.deb11.52-cloud-amd64-unsigned"),
            None
        );
        assert_eq!(
            v612.number("linux-image-6.12.118+deb13-cloud-amd64-unsigned"),
            Some(118)
        );
        assert_eq!(
            v612.number("linux-image-6.12.118+deb12-cloud-amd64-unsigned"),
            None
        );
        assert_eq!(
            v612.number("linux-image-6.12.115+deb13.1-cloud-amd64-unsigned"),
            None
        );
    }
}
