//! The `#[repr(C)]` types that pfault's eBPF programs write and its userspace reads, and every
//! number both sides must agree on (sizes, map capacities, flag bits). Each fact is written
//! here once: the kernel side declares its maps with these capacities, and userspace sizes,
//! checks and reports them from the same constants.
//!
//! Nothing but plain data lives here: both sides must agree on every byte, so every struct
//! is `#[repr(C)]` with explicit padding and no pointers.
#![no_std]

/// Marks a type as plain data for aya's userspace maps (the `user` feature), beside the type.
macro_rules! pod {
    ($t:ty) => {
        #[cfg(feature = "user")]
        unsafe impl aya::Pod for $t {}
    };
}

pub mod config;
pub mod counts;
pub mod limits;
pub mod records;
pub mod unwind;

pub use self::{config::*, counts::*, limits::*, records::*, unwind::*};
