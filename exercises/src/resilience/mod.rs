//! Placeholder for the resilience theme while its exercises are written (replaced in this change).

use crate::framework::Exercise;

/// The resilience exercises, in catalogue order.
pub const EXERCISES: &[Exercise] = &[];
