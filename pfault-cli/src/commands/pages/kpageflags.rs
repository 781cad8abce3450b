//! The page flags /proc/kpageflags reports, named as page-types (tools/mm/page-types.c) names
//! them: one letter for the symbolic column, a long name for the list.
//!
//! Bits 0-26 are the kernel's stable ABI (include/uapi/linux/kernel-page-flags.h); 32-41 are
//! kernel-internal bits it exports as they are. Like `page-types -r`, the bits some pages
//! overload are split out into free slots (47-51), and what pagemap knows of the mapping is
//! added in 55-63, so one flag set says everything known of a page.

/// (bit, letter, long name), in bit order: the symbolic column has one letter per entry.
const FLAGS: &[(u32, char, &str)] = &[
    (0, 'L', "locked"),
    (1, 'E', "error"),
    (2, 'R', "referenced"),
    (3, 'U', "uptodate"),
    (4, 'D', "dirty"),
    (5, 'l', "lru"),
    (6, 'A', "active"),
    (7, 'S', "slab"),
    (8, 'W', "writeback"),
    (9, 'I', "reclaim"),
    (10, 'B', "buddy"),
    (11, 'M', "mmap"),
    (12, 'a', "anonymous"),
    (13, 's', "swapcache"),
    (14, 'b', "swapbacked"),
    (15, 'H', "compound_head"),
    (16, 'T', "compound_tail"),
    (17, 'G', "huge"),
    (18, 'u', "unevictable"),
    (19, 'X', "hwpoison"),
    (20, 'n', "nopage"),
    (21, 'x', "ksm"),
    (22, 't', "thp"),
    (23, 'o', "offline"),
    (24, 'z', "zero_page"),
    (25, 'i', "idle_page"),
    (26, 'g', "pgtable"),
    (32, 'r', "reserved"),
    (33, 'm', "mlocked"),
    (34, 'd', "mappedtodisk"),
    (35, 'P', "private"),
    (36, 'p', "private_2"),
    (37, 'O', "owner_private"),
    (38, 'h', "arch"),
    (40, 'f', "softdirty"),
    (41, 'H', "arch_2"),
    (47, 'd', "anon_exclusive"),
    (48, 'I', "readahead"),
    (50, 'A', "slub_frozen"),
    (51, 'E', "slub_debug"),
    (61, 'F', "file"),
    (62, 'w', "swap"),
    (63, '1', "mmap_exclusive"),
];

const fn bit(n: u32) -> u64 {
    1 << n
}

const ERROR: u64 = bit(1);
const ACTIVE: u64 = bit(6);
const SLAB: u64 = bit(7);
const WRITEBACK: u64 = bit(8);
const RECLAIM: u64 = bit(9);
pub(crate) const ANON: u64 = bit(12);
pub(crate) const COMPOUND_HEAD: u64 = bit(15);
pub(crate) const HUGE: u64 = bit(17);
pub(crate) const NOPAGE: u64 = bit(20);
pub(crate) const THP: u64 = bit(22);
const MAPPEDTODISK: u64 = bit(34);
const SOFTDIRTY: u64 = bit(40);
const ANON_EXCLUSIVE: u64 = bit(47);
const READAHEAD: u64 = bit(48);
const SLUB_FROZEN: u64 = bit(50);
const SLUB_DEBUG: u64 = bit(51);
const FILE: u64 = bit(61);
const SWAP: u64 = bit(62);
const MMAP_EXCLUSIVE: u64 = bit(63);

/// pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
pub mod pme {
    pub const PFN_MASK: u64 = (1 << 55) - 1;
    pub(crate) const SOFT_DIRTY: u64 = 1 << 55;
    pub(crate) const EXCLUSIVE: u64 = 1 << 56;
    pub(crate) const FILE: u64 = 1 << 61;
    pub(crate) const SWAP: u64 = 1 << 62;
    pub(crate) const PRESENT: u64 = 1 << 63;
    /// When swapped, bits 0-4 are the swap type and 5-54 the offset in it.
    pub(crate) const SWAP_TYPE_BITS: u32 = 5;
}

/// A page's flag set from its kpageflags word and its pagemap entry (page-types'
/// `expand_overloaded_flags`). A swapped page has no kpageflags word: pass 0.
pub fn expand(mut flags: u64, pme: u64) -> u64 {
    // Anonymous pages reuse PG_mappedtodisk for "exclusive to one mm" (PG_anon_exclusive).
    if flags & ANON != 0 && flags & MAPPEDTODISK != 0 {
        flags ^= MAPPEDTODISK | ANON_EXCLUSIVE;
    }
    if flags & SLAB != 0 {
        if flags & ACTIVE != 0 {
            flags ^= ACTIVE | SLUB_FROZEN;
        }
        if flags & ERROR != 0 {
            flags ^= ERROR | SLUB_DEBUG;
        }
    }
    // PG_reclaim means "readahead" on a page not under writeback.
    if flags & (RECLAIM | WRITEBACK) == RECLAIM {
        flags ^= RECLAIM | READAHEAD;
    }
    for (from, to) in [
        (pme::SOFT_DIRTY, SOFTDIRTY),
        (pme::FILE, FILE),
        (pme::SWAP, SWAP),
        (pme::EXCLUSIVE, MMAP_EXCLUSIVE),
    ] {
        if pme & from != 0 {
            flags |= to;
        }
    }
    flags
}

/// One letter per known flag, `_` when clear, as page-types prints them.
pub fn symbolic(flags: u64) -> String {
    FLAGS
        .iter()
        .map(|&(b, c, _)| if flags & bit(b) != 0 { c } else { '_' })
        .collect()
}

/// The long names of the flags set, in bit order; a bit this table does not know (a newer
/// kernel's) reads `bitN` rather than vanishing.
pub fn long_names(flags: u64) -> Vec<String> {
    (0..64)
        .filter(|&b| flags & bit(b) != 0)
        .map(|b| match FLAGS.iter().find(|f| f.0 == b) {
            Some(&(_, _, name)) => name.to_string(),
            None => format!("bit{b}"),
        })
        .collect()
}

/// How wide the symbolic column is.
pub fn symbolic_width() -> usize {
    FLAGS.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_page_types() {
        let f = bit(3) | bit(5) | bit(6) | bit(11) | bit(12) | bit(14);
        assert_eq!(expand(f, 0), f);
        assert_eq!(
            long_names(f).join(","),
            "uptodate,lru,active,mmap,anonymous,swapbacked"
        );
        assert_eq!(&symbolic(f)[..16], "___U_lA____Ma_b_");
        assert_eq!(symbolic(0).len(), symbolic_width());
    }

    #[test]
    fn overloaded_bits_are_split_and_pagemap_bits_added() {
        let anon_excl = expand(ANON | MAPPEDTODISK, pme::PRESENT | pme::EXCLUSIVE);
        assert_eq!(anon_excl, ANON | ANON_EXCLUSIVE | MMAP_EXCLUSIVE);
        assert_eq!(expand(RECLAIM, 0), READAHEAD);
        assert_eq!(expand(RECLAIM | WRITEBACK, 0), RECLAIM | WRITEBACK);
        assert_eq!(long_names(expand(0, pme::SWAP)), ["swap"]);
        assert_eq!(long_names(bit(45)), ["bit45"]);
    }

    #[test]
    fn symbolic_has_one_letter_per_known_flag_in_bit_order() {
        assert_eq!(symbolic_width(), 43);
        assert_eq!(symbolic(0), "_".repeat(43));
        assert_eq!(symbolic(u64::MAX), "LERUDlASWIBMasbHTGuXnxtozigrmdPpOhfHdIAEFw1");
        // Bit 26 (pgtable) is the 27th letter, bit 32 (reserved) the 28th: 27-31 are not flags.
        assert_eq!(
            symbolic(bit(26)),
            format!("{}g{}", "_".repeat(26), "_".repeat(16))
        );
        assert_eq!(
            symbolic(bit(32)),
            format!("{}r{}", "_".repeat(27), "_".repeat(15))
        );
        assert_eq!(symbolic(bit(63)), format!("{}1", "_".repeat(42)));
        // Bits no entry names show nowhere in the symbolic column.
        assert_eq!(symbolic(bit(27) | bit(39) | bit(60)), "_".repeat(43));
    }

    #[test]
    fn long_names_name_every_set_bit_once() {
        let all = long_names(u64::MAX);
        assert_eq!(all.len(), 64);
        assert_eq!(all[0], "locked");
        assert_eq!(all[27], "bit27");
        assert_eq!(all[39], "bit39");
        assert_eq!(all[47], "anon_exclusive");
        assert_eq!(all[63], "mmap_exclusive");
        assert!(long_names(0).is_empty());
        assert_eq!(
            long_names(THP | COMPOUND_HEAD | ANON),
            ["anonymous", "compound_head", "thp"]
        );
    }

    #[test]
    fn slab_pages_read_active_and_error_as_slub_states() {
        assert_eq!(expand(SLAB | ACTIVE | ERROR, 0), SLAB | SLUB_FROZEN | SLUB_DEBUG);
        assert_eq!(expand(SLAB | ACTIVE, 0), SLAB | SLUB_FROZEN);
        // Not a slab page: active and error are themselves.
        assert_eq!(expand(ACTIVE | ERROR, 0), ACTIVE | ERROR);
    }

    #[test]
    fn mappedtodisk_is_anon_exclusive_only_on_anonymous_pages() {
        assert_eq!(expand(MAPPEDTODISK, 0), MAPPEDTODISK);
        assert_eq!(expand(ANON, 0), ANON);
        assert_eq!(expand(ANON | MAPPEDTODISK, 0), ANON | ANON_EXCLUSIVE);
        assert_eq!(
            long_names(expand(ANON | MAPPEDTODISK, 0)),
            ["anonymous", "anon_exclusive"]
        );
    }

    #[test]
    fn pagemap_bits_add_flags_and_its_pfn_adds_none() {
        assert_eq!(expand(0, pme::PRESENT | pme::PFN_MASK), 0);
        assert_eq!(expand(0, pme::SOFT_DIRTY), SOFTDIRTY);
        assert_eq!(expand(0, pme::FILE), FILE);
        assert_eq!(expand(0, pme::EXCLUSIVE), MMAP_EXCLUSIVE);
        assert_eq!(
            long_names(expand(bit(5), pme::FILE | pme::SOFT_DIRTY | 0x1234)),
            ["lru", "softdirty", "file"]
        );
        assert_eq!(
            symbolic(expand(0, pme::SWAP))
                .chars()
                .filter(|&c| c != '_')
                .collect::<String>(),
            "w"
        );
    }
}
