//! CFI unwind tables: rows, files and the code mappings the kernel side meets.

/// How an unwind row finds the caller's frame: its CFA (the stack pointer before the call),
/// whose word below is the return address (x86-64).
/// No row covers the address: the frame pointer is followed instead.
pub const CFA_NONE: u8 = 0;
/// CFA = rsp + `cfa_off`.
pub const CFA_RSP: u8 = 1;
/// CFA = rbp + `cfa_off`.
pub const CFA_RBP: u8 = 2;
/// A PLT entry: CFA = rsp + 8, plus 8 once rip is `cfa_off` or more bytes into its 16-byte
/// slot (the push of the lazy-binding stub).
pub const CFA_PLT: u8 = 3;
/// The return address is undefined: the outermost frame (`_start`, a thread's start).
pub const CFA_END: u8 = 4;
/// A signal frame (`__restore_rt`): the interrupted rip, rsp and rbp are in the `ucontext`
/// at rsp, and the interrupted rip is no return address (its own row, not the one before).
pub const CFA_SIGNAL: u8 = 5;
/// CFA = register + `cfa_off`: the register is named in the kind's high nibble (`CFA_REG |
/// reg << 4`, `REG_*`). Registers but rsp and rbp are known only in the frame that faulted
/// (`-fstack-clash-protection`'s probe loop keeps the CFA in r11, a realigning prologue in
/// r10).
pub const CFA_REG: u8 = 6;
/// CFA = register + 8 * `cfa_off`: a frame larger than `cfa_off` holds (32 KiB).
pub const CFA_REG_X8: u8 = 7;
/// CFA = the word at register + `cfa_off` (`DW_OP_bregN; DW_OP_deref`: gcc's stack
/// realignment keeps the CFA, its argument pointer, in the frame).
pub const CFA_DEREF: u8 = 8;
/// CFA = the word at rsp + `cfa_off`, plus 8 times the kind's high nibble (OpenSSL's
/// assembly: `DW_OP_breg7 N; DW_OP_deref; DW_OP_plus_uconst M`, rsp as it was at entry,
/// saved in the frame, plus the return address and what was pushed before it was saved).
pub const CFA_DEREF_RSP: u8 = 9;
/// CFA = rsp + `cfa_off`, with the return address not in the word below the CFA but at
/// CFA - 8 * (2 + the kind's high nibble): 16 to 136 bytes below (hand-written assembly that
/// moves it, as a stack switch or a trampoline does).
pub const CFA_RSP_RA: u8 = 10;
/// The kind's low nibble; the high one names the register of `CFA_REG`, `CFA_REG_X8` and
/// `CFA_DEREF`, `CFA_DEREF_RSP`'s addend and `CFA_RSP_RA`'s return address.
pub const CFA_KIND: u8 = 15;
/// A register, as `CFA_REG*` name it: its word in the kernel's x86-64 `struct pt_regs` (a
/// uapi layout, `asm/ptrace.h`: r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx,
/// rdx, rsi, rdi), or `REG_RSP`.
pub const REG_RBP: u8 = 4;
/// rsp, whose `pt_regs` word (19) does not fit a nibble.
pub const REG_RSP: u8 = 15;
/// `UnwindRow::rbp`: the caller's rbp was saved at rbp (where a realigning prologue
/// pushes it: `DW_CFA_expression rbp: DW_OP_breg6 0`), not at a place relative to the CFA.
pub const RBP_AT_RBP: i8 = i8::MIN;
/// Where the kernel's x86-64 `ucontext` (at rsp in `__restore_rt`) keeps rbp, rsp and rip:
/// `uc_mcontext.gregs[REG_RBP]`, `[REG_RSP]`, `[REG_RIP]`.
pub const SIGFRAME_RBP: u64 = 120;
pub const SIGFRAME_RSP: u64 = 160;
pub const SIGFRAME_RIP: u64 = 168;

/// One row of a binary's unwind table: from file offset `off` up to the next row's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRow {
    pub off: u32,
    pub cfa_off: i16,
    /// `CFA_*`, and for some the register (`CFA_KIND`).
    pub cfa: u8,
    /// Where the caller's rbp was saved: at CFA + 8 * `rbp`, or `RBP_AT_RBP`; 0 when rbp is
    /// unchanged.
    pub rbp: i8,
}
pod!(UnwindRow);

/// A file, as the kernel names it: `s_dev` and inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileId {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}
pod!(FileId);

/// `UnwindFile::state`: the kernel side asked userspace for the table.
pub const TABLE_ASKED: u32 = 0;
/// Rows `first..first + rows` of `UNWIND_ROWS`.
pub const TABLE_READY: u32 = 1;
/// The file has no usable CFI: its frames follow the frame pointer.
pub const TABLE_NONE: u32 = 2;
/// The file's table did not fit in `UNWIND_ROWS` (`--unwind-mb`).
pub const TABLE_NO_ROOM: u32 = 3;
/// Never stored: `UNWIND_FILES` was full when the kernel side would have asked for the table.
pub const TABLE_FILES_FULL: u32 = 4;
/// Never stored: the code is in anonymous memory (a JIT's), no file's.
pub const TABLE_ANON: u32 = 5;
/// `TABLE_*` values, a power of two (the kernel side masks a state with `TABLE_STATES - 1`).
pub const TABLE_STATES: u32 = 8;

/// Value of `UNWIND_FILES`: where a binary's rows are, shared by every process mapping it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindFile {
    pub first: u32,
    pub rows: u32,
    pub state: u32,
    pub _pad: u32,
}
pod!(UnwindFile);

/// Key of `TEXT_VMAS`: a 64 KiB granule of a process's address space. `gen` (`EXEC_GEN`)
/// tells a process apart from what it was before an exec, and from an earlier process that
/// had its pid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TextKey {
    pub tgid: u32,
    pub gen: u32,
    pub granule: u32,
    pub _pad: u32,
}
pod!(TextKey);

/// `TEXT_VMAS` granules are this many bits of address.
pub const TEXT_GRANULE_SHIFT: u32 = 16;

/// A code mapping the unwinder met, and its file's table as last seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TextVma {
    pub start: u64,
    pub end: u64,
    /// File offset of an address = address + `bias` (wrapping).
    pub bias: u64,
    pub file: FileId,
    pub table: UnwindFile,
}
pod!(TextVma);
