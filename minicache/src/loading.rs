//! (being written: loading)

use std::time::Duration;

/// The loading settings of a cache, kept by the builder and the cache core; the loading
/// layer reads them.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadingOptions {
    /// How long past its expiry an entry is kept, so that a loading read can serve it stale
    /// while one refresh runs (zero: expired entries are gone at once). The core keeps
    /// such entries (they count against capacity) but plain `get` never returns them.
    pub(crate) stale_grace: Duration,
}
