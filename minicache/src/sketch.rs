//! (being written: the cache core)
