//! cgroup v2, as the kernel's BPF helpers see it: where the hierarchy is mounted (/sys/fs/cgroup
//! on a systemd host, /sys/fs/cgroup/unified on a hybrid one), a directory's id and depth for
//! the in-kernel filter, and the path of an id for rows and labels.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

/// A cgroup as the kernel names it: its id (the inode of its directory) and its depth below
/// the root (the level `bpf_get_current_ancestor_cgroup_id` takes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cgroup {
    pub(crate) id: u64,
    pub(crate) level: u32,
}

/// The cgroup2 mount point in `/proc/self/mountinfo` text.
fn mount_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// Where cgroup v2 is mounted.
pub(crate) fn mount() -> Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    mount_in(&info).context(
        "no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup): --cgroup and --by-cgroup need one",
    )
}

/// The cgroup at `path`: a directory under the cgroup2 mount, or a path as /proc/PID/cgroup
/// writes it (`/system.slice/foo.service`), which is taken below the mount.
pub(crate) fn resolve(path: &Path) -> Result<Cgroup> {
    let root = mount()?;
    let dir = if path.starts_with(&root) {
        path.to_path_buf()
    } else {
        root.join(path.strip_prefix("/").unwrap_or(path))
    };
    let dir = dir.canonicalize().with_context(|| {
        format!(
            "no cgroup {}: give a directory under {}",
            path.display(),
            root.display()
        )
    })?;
    let Ok(below) = dir.strip_prefix(&root) else {
        bail!(
            "{} is not under the cgroup v2 mount {}",
            dir.display(),
            root.display()
        );
    };
    let meta = std::fs::metadata(&dir).with_context(|| format!("reading {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a cgroup directory", dir.display());
    }
    Ok(Cgroup {
        id: meta.ino(),
        level: below.components().count() as u32,
    })
}

/// Names of cgroup ids, as /proc/PID/cgroup writes them (`/user.slice/...`), from a walk of
/// the hierarchy redone when an id is new.
#[derive(Default)]
pub(crate) struct Names {
    paths: HashMap<u64, String>,
}

impl Names {
    pub(crate) fn name(&mut self, id: u64) -> String {
        if !self.paths.contains_key(&id) {
            self.rescan();
        }
        self.paths
            .get(&id)
            // Removed before pfault looked: its id is all there is.
            .map_or_else(|| format!("cgroup:{id}"), String::clone)
    }

    /// Rebuilt whole: cgroups removed since leave it, so it stays as big as the hierarchy.
    fn rescan(&mut self) {
        let Ok(root) = mount() else { return };
        self.paths.clear();
        let mut todo = vec![root.clone()];
        while let Some(dir) = todo.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = dir.strip_prefix(&root).unwrap_or(&dir);
            self.paths.insert(meta.ino(), format!("/{}", rel.display()));
            if let Ok(entries) = std::fs::read_dir(&dir) {
                todo.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_is_found_among_v1_mounts() {
        let info = "\
25 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 33 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:11 - cgroup cgroup rw,memory
";
        assert_eq!(mount_in(info), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(
            mount_in("35 33 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"),
            None
        );
        assert_eq!(mount_in("garbage\n - \n"), None);
    }

    #[test]
    fn the_root_is_level_zero_and_its_children_level_one() {
        let Ok(root) = mount() else {
            eprintln!("no cgroup v2 here; skipping");
            return;
        };
        assert_eq!(resolve(&root).unwrap().level, 0);
        assert_eq!(resolve(Path::new("/")).unwrap(), resolve(&root).unwrap());
        assert!(resolve(Path::new("/no/such/cgroup")).is_err());
        let mut names = Names::default();
        assert_eq!(names.name(resolve(&root).unwrap().id), "/");
    }
}
