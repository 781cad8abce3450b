//! Ring-buffer records, decoded in one place. Every record starts with a `REC_*` tag; the
//! types are `Pod` (any bytes are a value), so decoding is a length check and a copy, and a
//! short or unknown record is an error, never undefined behaviour.

use std::fmt;

use aya::Pod;
use pfault_common::{
    FaultEvent, FaultEventStacks, LateStack, MapSeen, TaskSeen, UnwindNeed, MAX_STACK, REC_FAULT, REC_LATE,
    REC_MAP, REC_STACK, REC_TASK, REC_UNWIND, STACK_FRAMES_HEADER,
};

/// A fault's stacks (`trace -U/-K`), leaf first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stacks {
    pub user: Vec<u64>,
    pub kernel: Vec<u64>,
}

#[derive(Clone, Debug)]
pub enum Record {
    /// One fault (`trace`), with its stacks when they were asked for.
    Fault(FaultEvent, Option<Stacks>),
    /// A process to note the maps of: a thread's first fault, an exec, a fork.
    Task(TaskSeen),
    /// A file a process mapped.
    Map(MapSeen),
    /// Code of a file the CFI unwinder has no table for; the engine takes it.
    Unwind(UnwindNeed),
    /// The frames (leaf first) of a stack `stackcount` counts under `hash`, first counted by
    /// process `tgid`.
    Stack { hash: u64, tgid: u32, frames: Vec<u64> },
    /// A fault's registers and user stack, for userspace to walk and count (`stackcount`).
    Late(Box<LateStack>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    Short { tag: u32, len: usize, need: usize },
    UnknownTag(u32),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Short { tag, len, need } => {
                write!(f, "ring-buffer record {tag} of {len} bytes, expected {need}")
            }
            RecordError::UnknownTag(tag) => write!(f, "unknown ring-buffer record {tag}"),
        }
    }
}

impl std::error::Error for RecordError {}

/// A `T` from the start of `data`, if it is long enough.
fn read<T: Pod>(data: &[u8]) -> Option<T> {
    // SAFETY: `T` is Pod (every bit pattern is a value) and `data` holds size_of::<T>() bytes;
    // ring-buffer records are 8-byte aligned but no alignment is assumed.
    (data.len() >= size_of::<T>()).then(|| unsafe { std::ptr::read_unaligned(data.as_ptr().cast::<T>()) })
}

/// The first `bytes` bytes of a stack array, as frames.
fn frames(raw: &[u64; MAX_STACK], bytes: u16) -> Vec<u64> {
    raw[..(bytes as usize / 8).min(MAX_STACK)].to_vec()
}

pub fn decode(data: &[u8]) -> Result<Record, RecordError> {
    let tag = read::<u32>(data).ok_or(RecordError::Short {
        tag: 0,
        len: data.len(),
        need: 4,
    })?;
    let short = |need: usize| RecordError::Short {
        tag,
        len: data.len(),
        need,
    };
    match tag {
        REC_TASK => read::<TaskSeen>(data)
            .map(Record::Task)
            .ok_or_else(|| short(size_of::<TaskSeen>())),
        REC_FAULT => {
            let ev = read::<FaultEvent>(data).ok_or_else(|| short(size_of::<FaultEvent>()))?;
            if ev.ustack_bytes == 0 && ev.kstack_bytes == 0 && data.len() < size_of::<FaultEventStacks>() {
                return Ok(Record::Fault(ev, None));
            }
            let s = read::<FaultEventStacks>(data).ok_or_else(|| short(size_of::<FaultEventStacks>()))?;
            Ok(Record::Fault(
                ev,
                Some(Stacks {
                    user: frames(&s.ustack, ev.ustack_bytes),
                    kernel: frames(&s.kstack, ev.kstack_bytes),
                }),
            ))
        }
        REC_MAP => read::<MapSeen>(data)
            .map(Record::Map)
            .ok_or_else(|| short(size_of::<MapSeen>())),
        REC_UNWIND => read::<UnwindNeed>(data)
            .map(Record::Unwind)
            .ok_or_else(|| short(size_of::<UnwindNeed>())),
        REC_STACK => {
            // `{u32 rec; u32 nframes; u64 hash; u32 tgid; u32 pad; u64 frames[nframes]}`: only
            // the frames walked.
            let header = data
                .get(..STACK_FRAMES_HEADER)
                .ok_or_else(|| short(STACK_FRAMES_HEADER))?;
            let n = u32::from_ne_bytes(header[4..8].try_into().unwrap()) as usize;
            let hash = u64::from_ne_bytes(header[8..16].try_into().unwrap());
            let tgid = u32::from_ne_bytes(header[16..20].try_into().unwrap());
            let need = STACK_FRAMES_HEADER + n.min(MAX_STACK) * 8;
            let body = data.get(STACK_FRAMES_HEADER..need).ok_or_else(|| short(need))?;
            let frames = body
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
                .collect();
            Ok(Record::Stack { hash, tgid, frames })
        }
        REC_LATE => read::<LateStack>(data)
            .map(|l| Record::Late(Box::new(l)))
            .ok_or_else(|| short(size_of::<LateStack>())),
        other => Err(RecordError::UnknownTag(other)),
    }
}

/// Raw bytes of a record, for tests and replay benchmarks.
pub fn bytes_of<T: Pod>(value: &T) -> &[u8] {
    // SAFETY: a Pod value's bytes are all initialised (its types pad explicitly).
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskSeen {
        TaskSeen {
            rec: REC_TASK,
            pid: 10,
            tid: 11,
            forked_from: 9,
        }
    }

    #[test]
    fn task_notices_decode() {
        match decode(bytes_of(&task())) {
            Ok(Record::Task(t)) => assert_eq!((t.pid, t.tid, t.forked_from), (10, 11, 9)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fault_events_decode_with_and_without_stacks() {
        // SAFETY: all-zero bytes are a valid (Pod) FaultEventStacks.
        let mut s: FaultEventStacks = unsafe { std::mem::zeroed() };
        s.ev.rec = REC_FAULT;
        s.ev.pid = 7;
        match decode(&bytes_of(&s)[..size_of::<FaultEvent>()]) {
            Ok(Record::Fault(ev, None)) => assert_eq!(ev.pid, 7),
            other => panic!("{other:?}"),
        }
        s.ev.ustack_bytes = 16;
        s.ustack[..3].copy_from_slice(&[1, 2, 3]);
        match decode(bytes_of(&s)) {
            Ok(Record::Fault(_, Some(st))) => {
                assert_eq!(st.user, vec![1, 2]);
                assert!(st.kernel.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // Stacks announced but cut off: an error, not a read past the end.
        assert!(decode(&bytes_of(&s)[..size_of::<FaultEvent>() + 8]).is_err());
    }

    #[test]
    fn stack_records_carry_only_their_frames() {
        // SAFETY: all-zero bytes are a valid (Pod) StackFrames.
        let mut s: pfault_common::StackFrames = unsafe { std::mem::zeroed() };
        s.rec = REC_STACK;
        s.nframes = 3;
        s.hash = 0xfeed;
        s.tgid = 42;
        s.frames[..4].copy_from_slice(&[10, 20, 30, 40]);
        let sent = &bytes_of(&s)[..STACK_FRAMES_HEADER + 3 * 8];
        match decode(sent) {
            Ok(Record::Stack { hash, tgid, frames }) => {
                assert_eq!((hash, tgid, frames), (0xfeed, 42, vec![10, 20, 30]))
            }
            other => panic!("{other:?}"),
        }
        assert!(decode(&sent[..sent.len() - 1]).is_err());
        // A frame count past the kernel's maximum reads no further than it.
        s.nframes = u32::MAX;
        assert!(
            matches!(decode(bytes_of(&s)), Ok(Record::Stack { frames, .. }) if frames.len() == MAX_STACK)
        );
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert!(decode(&[]).is_err());
        assert!(decode(&bytes_of(&task())[..8]).is_err());
        assert_eq!(
            decode(&99u32.to_ne_bytes()).unwrap_err(),
            RecordError::UnknownTag(99)
        );
    }
}
