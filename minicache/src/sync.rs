//! (being written: loading)
