//! What a finished fault feeds: events, stack counts, file counts.

pub(crate) mod events;
pub(crate) mod files;
pub(crate) mod stacks;
