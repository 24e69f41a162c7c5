//! Placeholder for the ratelimit theme while its exercises are written (replaced in this change).

use crate::framework::Exercise;

/// The ratelimit exercises, in catalogue order.
pub const EXERCISES: &[Exercise] = &[];
