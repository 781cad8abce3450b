//! `cargo xtask vm-test`: pfault on a second kernel under qemu.

use anyhow::Result;

pub fn run() -> Result<()> {
    crate::say("vm-test: not written yet");
    Ok(())
}
