//! The shared libraries a program will load, found as the dynamic loader finds them: so that
//! a command pfault starts has the tables of its libraries built while the programs load,
//! not when its first stacks reach their code. CPython keeps its interpreter in
//! libpython, without frame pointers: built on demand, its table came after the first
//! thousand or so of a script's faults, whose stacks then stopped in it.
//!
//! The search is ld.so's, less what only the loader knows at run time: the program's
//! `DT_RPATH` (when it has no `DT_RUNPATH`), `LD_LIBRARY_PATH`, its `DT_RUNPATH`, the
//! directories of /etc/ld.so.conf, then the defaults; `$ORIGIN` is the directory of the
//! object that asks. A library not found here is built when its code is met, as before.

use std::{
    collections::HashSet,
    ffi::OsStr,
    fs::File,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use object::{elf, read::elf::ElfFile64, Endianness};

/// What one object says of its libraries.
#[derive(Default)]
struct Dynamic {
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
}

fn dynamic(path: &Path) -> Option<Dynamic> {
    let file = File::open(path).ok()?;
    // SAFETY: read only, as the unwinder's own maps of binaries.
    let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let elf = ElfFile64::<Endianness>::parse(&*data).ok()?;
    let endian = elf.endian();
    let table = elf.elf_section_table().dynamic_table(endian, &*data).ok()?;
    let mut out = Dynamic::default();
    for d in &table {
        let Ok(s) = table.string(d) else { continue };
        let s = String::from_utf8_lossy(s).into_owned();
        let paths = || s.split(':').map(str::to_string).collect::<Vec<_>>();
        match d.tag {
            elf::DT_NEEDED => out.needed.push(s),
            elf::DT_RPATH => out.rpath = paths(),
            elf::DT_RUNPATH => out.runpath = paths(),
            _ => {}
        }
    }
    Some(out)
}

/// The directories of /etc/ld.so.conf and the files it includes, then the defaults.
fn system_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    conf_dirs(Path::new("/etc/ld.so.conf"), &mut dirs, 0);
    for d in ["/lib", "/usr/lib", "/lib64", "/usr/lib64"] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

fn conf_dirs(conf: &Path, dirs: &mut Vec<PathBuf>, depth: u32) {
    let Ok(text) = std::fs::read_to_string(conf) else {
        return;
    };
    for line in text.lines().map(|l| l.split('#').next().unwrap_or("").trim()) {
        if let Some(pattern) = line.strip_prefix("include").map(str::trim) {
            // Includes name files by a pattern on their basename: `dir/*.conf`.
            let pattern = Path::new(pattern);
            let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name()) else {
                continue;
            };
            let (prefix, suffix) = name.to_str().and_then(|n| n.split_once('*')).unwrap_or(("", ""));
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(OsStr::to_str)
                        .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
                })
                .collect();
            files.sort();
            if depth < 4 {
                for f in files {
                    conf_dirs(&f, dirs, depth + 1);
                }
            }
        } else if line.starts_with('/') {
            dirs.push(PathBuf::from(line));
        }
    }
}

/// Every library `program` needs, directly or through another, that is found (the loader
/// and libraries pfault itself maps included: the caller skips what it has).
pub(crate) fn libraries(program: &Path) -> Vec<PathBuf> {
    let env: Vec<String> = std::env::var("LD_LIBRARY_PATH")
        .map(|v| {
            v.split(':')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let system = system_dirs();
    let mut found = Vec::new();
    let mut names = HashSet::new();
    let mut queue = vec![program.to_path_buf()];
    // A program's own RPATH applies to its libraries' lookups too, as ld.so does.
    let mut inherited: Vec<PathBuf> = Vec::new();
    while let Some(object) = queue.pop() {
        let Some(dynamic) = dynamic(&object) else { continue };
        let origin = object.parent().unwrap_or(Path::new("/")).to_path_buf();
        let expand = |dirs: &[String]| -> Vec<PathBuf> {
            dirs.iter()
                .map(|d| {
                    let origin = origin.to_string_lossy();
                    PathBuf::from(d.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin))
                })
                .collect()
        };
        // DT_RPATH only where there is no DT_RUNPATH; the program's comes first, so what it
        // leaves in `inherited` is its own.
        let mut rpath = Vec::new();
        if dynamic.runpath.is_empty() {
            rpath = expand(&dynamic.rpath);
            rpath.extend(inherited.iter().cloned());
        }
        if object == program {
            inherited = rpath.clone();
        }
        let search: Vec<PathBuf> = rpath
            .into_iter()
            .chain(env.iter().map(PathBuf::from))
            .chain(expand(&dynamic.runpath))
            .chain(system.iter().cloned())
            .collect();
        for name in dynamic.needed {
            if !names.insert(name.clone()) {
                continue;
            }
            let hit = if name.contains('/') {
                Some(PathBuf::from(&name)).filter(|p| p.is_file())
            } else {
                search
                    .iter()
                    .map(|d| d.join(OsStr::from_bytes(name.as_bytes())))
                    .find(|p| p.is_file())
            };
            if let Some(path) = hit {
                found.push(path.clone());
                queue.push(path);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pfault's own test binary needs the C library, found where the loader found it.
    #[test]
    fn the_c_library_is_found_where_the_loader_found_it() {
        let exe = std::env::current_exe().unwrap();
        let libs = libraries(&exe);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let libc = libs
            .iter()
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("libc.so"))
            })
            .unwrap_or_else(|| panic!("no libc among {libs:?}"));
        let mapped = std::fs::canonicalize(libc).unwrap();
        assert!(
            maps.lines().any(|l| l.ends_with(&*mapped.to_string_lossy())),
            "{} is not what this process mapped:\n{maps}",
            mapped.display()
        );
    }
}
