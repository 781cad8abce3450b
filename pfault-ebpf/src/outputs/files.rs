//! Fault counts per file (`ffaults`).

use crate::*;

#[inline(always)]
pub(crate) fn count_file(m: &Mapping, kind: u8, tgid: u32, comm: &[u8; COMM_LEN], bytes: u64) {
    let key = FileKey {
        tgid,
        dev: m.dev,
        ino: m.ino,
        map_kind: m.kind as u32,
        _pad: 0,
        comm: *comm,
    };
    let cgroup = if conf!(flags) & CFG_BY_CGROUP != 0 {
        unsafe { bpf_get_current_cgroup_id() }
    } else {
        0
    };
    let fresh = FileCounts {
        counts: [0; 3],
        bytes: [0; 3],
        cgroup,
        name: m.name,
    };
    let Some(v) = get_or_insert(&FILE_COUNTS, &key, &fresh) else {
        return;
    };
    atomic_add(unsafe { addr_of_mut!((*v).counts[(kind as usize) % 3]) }, 1);
    if bytes != 0 {
        atomic_add(unsafe { addr_of_mut!((*v).bytes[(kind as usize) % 3]) }, bytes);
    }
}
