//! Consumer groups: the coordinator's state machine and committed offsets.

pub mod coordinator;
pub mod offsets;

pub use coordinator::{Coordinator, GroupError};
pub use offsets::{CommittedOffset, OffsetStore};
