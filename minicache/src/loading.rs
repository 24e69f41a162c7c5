//! The loading layer: `get_with` and friends, on top of the cache core.
//!
//! A plain cache answers "is it there?"; a loading cache answers "give me the value,
//! computing it if you must". Computing it is where caches hurt the thing behind them, so
//! this layer is about *when* and *how many times* a value is computed:
//!
//! - **Single-flight.** [`Cache::get_with`] and [`Cache::try_get_with`] (and their
//!   `_async` forms) run the loader at most once per key at a time, through one
//!   [`SingleFlight`] per cache: a thousand callers on a cold key give one load, and they
//!   all get its value (or its error, or the news that it panicked: see
//!   [`crate::flight`]). A sync and an async caller on the same key share one flight.
//! - **Failures are not cached**, unless [`CacheBuilder::negative_ttl`] says otherwise:
//!   then a failed load's error is kept for that long and returned without loading
//!   (a database that is down is not asked again by every request).
//! - **Stale-while-revalidate.** With [`CacheBuilder::stale_while_revalidate`], an entry
//!   past its expiry is kept for a grace window. A loading read inside the window gets
//!   the stale value at once while **one** refresh runs; other readers keep getting the
//!   stale value and start no second refresh. Past the window the entry is gone and the
//!   reader loads.
//! - **Refresh-ahead.** With [`CacheBuilder::refresh_after`], a loading read of an entry
//!   older than that gets the value at once and starts one refresh, so a hot key is
//!   renewed before it expires (Caffeine's `refreshAfterWrite`).
//! - **XFetch.** With [`CacheBuilder::xfetch`], each loading read of a fresh entry may
//!   decide to recompute it early, with a probability that rises as expiry nears and with
//!   how long the entry took to load ([`crate::xfetch`]).
//!
//! ## Who runs a refresh, and where
//!
//! A refresh needs a loader that can run again after the caller that first loaded the key
//! has returned. That is the **refresh loader** registered on the builder
//! ([`CacheBuilder::refresh_loader`], or [`CacheBuilder::async_refresh_loader`]), which
//! makes this a loading cache in Caffeine's sense. With one registered, every refresh
//! (stale, refresh-ahead or XFetch) runs in the background and *every* reader, including
//! the one that triggered it, gets the current value at once:
//!
//! - inside a tokio runtime: a blocking refresh loader runs on `spawn_blocking`, an async
//!   one as a task (`tokio::spawn`);
//! - outside one: on a new thread named `minicache-refresh` (an async loader gets a
//!   current-thread runtime on it). At most [`MAX_BACKGROUND_REFRESHES`] run at once;
//!   past that, a read that would start another serves the value and leaves the refresh
//!   to a later read.
//!
//! Without a refresh loader, the reader that triggers a refresh runs it **in the
//! foreground** with its own `init`, and pays the load's latency; readers arriving while
//! it runs get the old value. (This is XFetch as the paper describes it: the reader that
//! draws "early" recomputes.) A refresh that fails keeps the old value in place; the
//! failure is counted in the stats and is not negatively cached.
//!
//! The refresh claims the key's flight, so "one refresh at a time" and "one load at a
//! time" are the same rule: a caller that misses while a refresh runs waits for it.
//!
//! ## Errors
//!
//! `try_get_with` is generic over the loader's error type `E` and returns
//! [`LoadError<E>`]. Inside, errors are stored type-erased (a flight or a cached failure
//! is shared by callers whose `E` may differ); a caller that finds an error of another
//! type than its own ignores it and runs its own loader.
//!
//! Left out: bulk loading (`get_all`), `compute`-style updates, timeouts around loaders
//! (wrap the loader), and cancelling a background refresh. A loader must not load its own
//! key through the same cache: it would wait on itself.

use std::any::Any;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::ops::ControlFlow;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::cache::{Cache, CacheBuilder, Peek};
use crate::clock::Nanos;
use crate::flight::{self, Claim, Leader, LoadError, SingleFlight, Wait};
use crate::xfetch::XFetch;

/// The error type of a refresh loader: any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How many background refreshes may run at once, outside and inside a tokio runtime.
/// Each holds a thread (a new one, or one of tokio's blocking pool) for as long as its
/// loader takes; 64 is plenty for a cache whose refreshes are spread out by design.
/// Real deployments would size this to what the backing store tolerates.
pub const MAX_BACKGROUND_REFRESHES: usize = 64;

/// How many failed loads are remembered at most when negative caching is on, unless
/// [`CacheBuilder::max_negative_entries`] says otherwise. A flood of distinct failing
/// keys must not grow memory without bound.
pub const DEFAULT_MAX_NEGATIVE_ENTRIES: usize = 10_000;

/// The name of the threads that run background refreshes outside a tokio runtime.
pub const REFRESH_THREAD_NAME: &str = "minicache-refresh";

/// An error of whatever type the loader had, shareable by callers of any type.
type ErasedError = Arc<dyn Any + Send + Sync>;

/// What `catch_unwind` hands back from a panic.
type PanicPayload = Box<dyn Any + Send>;

type BlockingLoader<K, V> = Arc<dyn Fn(&K) -> Result<V, BoxError> + Send + Sync>;
type AsyncLoader<K, V> = Arc<dyn Fn(K) -> Pin<Box<dyn Future<Output = Result<V, BoxError>> + Send>> + Send + Sync>;

/// The loader background refreshes run.
enum RefreshLoader<K, V> {
    Blocking(BlockingLoader<K, V>),
    Async(AsyncLoader<K, V>),
}

impl<K, V> Clone for RefreshLoader<K, V> {
    fn clone(&self) -> Self {
        match self {
            RefreshLoader::Blocking(load) => RefreshLoader::Blocking(Arc::clone(load)),
            RefreshLoader::Async(load) => RefreshLoader::Async(Arc::clone(load)),
        }
    }
}

/// The loading settings of a cache, kept by the builder and the cache core; the loading
/// layer reads them.
///
/// `LoadingOptions` is not generic (the core holds it without knowing about loaders), so
/// what depends on `K` and `V` — the refresh loader, and the runtime state below — is kept
/// type-erased and downcast by the `Cache<K, V>` methods, which always ask for the types
/// the builder stored.
#[derive(Clone)]
pub(crate) struct LoadingOptions {
    /// How long past its expiry an entry is kept, so that a loading read can serve it stale
    /// while one refresh runs (zero: expired entries are gone at once). The core keeps
    /// such entries (they count against capacity) but plain `get` never returns them.
    pub(crate) stale_grace: Duration,
    /// An entry older than this is refreshed on its next loading read (refresh-ahead).
    pub(crate) refresh_after: Option<Duration>,
    /// Probabilistic early recomputation, when on.
    pub(crate) xfetch: Option<XFetch>,
    /// How long a failed load is remembered (negative caching); `None`: not at all.
    pub(crate) negative_ttl: Option<Duration>,
    /// The most failed loads remembered at once.
    pub(crate) max_negative_entries: usize,
    /// A `RefreshLoader<K, V>`, when one was registered.
    pub(crate) refresh_loader: Option<Arc<dyn Any + Send + Sync>>,
    /// A `LoadingState<K, V>`, made on first use. Shared by clones of these options: the
    /// builder is consumed by `build()`, so clones only ever serve one cache.
    pub(crate) state: Arc<OnceLock<Arc<dyn Any + Send + Sync>>>,
}

impl Default for LoadingOptions {
    fn default() -> Self {
        LoadingOptions {
            stale_grace: Duration::ZERO,
            refresh_after: None,
            xfetch: None,
            negative_ttl: None,
            max_negative_entries: DEFAULT_MAX_NEGATIVE_ENTRIES,
            refresh_loader: None,
            state: Arc::new(OnceLock::new()),
        }
    }
}

impl fmt::Debug for LoadingOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadingOptions")
            .field("stale_grace", &self.stale_grace)
            .field("refresh_after", &self.refresh_after)
            .field("xfetch", &self.xfetch)
            .field("negative_ttl", &self.negative_ttl)
            .field("max_negative_entries", &self.max_negative_entries)
            .field("refresh_loader", &self.refresh_loader.is_some())
            .finish()
    }
}

/// What the loading layer keeps per cache while it runs.
struct LoadingState<K, V> {
    /// Loads and refreshes running now, one per key at most.
    flights: SingleFlight<K, V, ErasedError>,
    /// Failed loads remembered for `negative_ttl` (empty when negative caching is off).
    /// A parking_lot lock: held for a map operation, never across a load.
    failures: parking_lot::Mutex<HashMap<K, CachedFailure, foldhash::fast::RandomState>>,
    /// Background refreshes running now (bounded by `MAX_BACKGROUND_REFRESHES`). An
    /// `Arc` so the refresh's thread or task can give its slot back when it ends.
    background_refreshes: Arc<AtomicUsize>,
    /// Callers asleep on another caller's load now: a gauge for `load_waiters`.
    waiters: AtomicUsize,
}

/// A failed load's error, kept until `expires_at`.
struct CachedFailure {
    error: ErasedError,
    expires_at: Nanos,
}

/// What a loading read found.
enum Lookup<V, E> {
    /// A value to return as it is.
    Fresh(V),
    /// A value to return, whose entry wants a refresh (stale, old, or XFetch's draw).
    NeedsRefresh(Peek<V>),
    /// A remembered failure of this caller's error type.
    Failed(Arc<E>),
    /// Nothing: load.
    Miss,
}

/// How a leader's load ends up in the cache.
enum Settle<V> {
    /// A load on a miss: a failure may be negatively cached.
    Load,
    /// A foreground refresh of a value still served: on failure, keep serving it.
    Revalidate { current: V },
    /// A background refresh: on failure the old entry stays; nothing else to do.
    Refresh,
}

/// Duration to nanoseconds, saturating (a `Duration` can exceed 584 years; `Nanos` not).
fn nanos(duration: Duration) -> Nanos {
    Nanos::try_from(duration.as_nanos()).unwrap_or(Nanos::MAX)
}

/// Narrows a shared, type-erased load error to the caller's error type. `None` when the
/// load that failed had another error type (its caller used another `E`).
fn typed_error<E: Send + Sync + 'static>(error: LoadError<ErasedError>) -> Option<LoadError<E>> {
    match error {
        LoadError::Failed(erased) => ErasedError::clone(&erased).downcast::<E>().ok().map(LoadError::Failed),
        LoadError::Panicked { message } => Some(LoadError::Panicked { message }),
    }
}

/// The panic `get_with` raises in a caller that waited on a loader that panicked: it has
/// no error to return.
fn followed_panic(message: &str) -> String {
    format!(
        "minicache: the loader this get_with waited on panicked in another caller ({message}); \
         use try_get_with to receive LoadError::Panicked instead of a panic"
    )
}

/// Counts a caller in `LoadingState::waiters` while it sleeps on a follower.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(waiters: &'a AtomicUsize) -> Self {
        waiters.fetch_add(1, Ordering::SeqCst);
        Waiting(waiters)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One of the `MAX_BACKGROUND_REFRESHES` slots, given back when the refresh ends (even by
/// a panic, or by its thread failing to start).
struct BackgroundSlot(Arc<AtomicUsize>);

impl BackgroundSlot {
    fn take(running: &Arc<AtomicUsize>) -> Option<Self> {
        let mut now = running.load(Ordering::SeqCst);
        loop {
            if now >= MAX_BACKGROUND_REFRESHES {
                return None;
            }
            match running.compare_exchange(now, now + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Some(BackgroundSlot(Arc::clone(running))),
                Err(actual) => now = actual,
            }
        }
    }
}

impl Drop for BackgroundSlot {
    fn drop(&mut self) {
        let before = self.0.fetch_sub(1, Ordering::SeqCst);
        debug_assert!(before > 0, "a background slot is given back once");
    }
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The value for `key`, computed by `init` on a miss. Concurrent calls for the same
    /// missing key run one `init` between them; the others wait and get its value.
    ///
    /// If `init` panics, the panic is resumed in this caller, and every caller waiting on
    /// it panics too (`get_with` has no error to return; [`Cache::try_get_with`] does).
    /// Nothing is cached then, so the next call runs `init` again.
    ///
    /// A waiting caller blocks its thread: in async code use [`Cache::get_with_async`],
    /// since a worker thread blocked here may be the one the load it waits for needs.
    ///
    /// ```
    /// use minicache::Cache;
    ///
    /// let cache: Cache<u64, String> = Cache::new(1_000);
    /// let name = cache.get_with(7, || "seven".to_string()); // a miss: runs the closure
    /// assert_eq!(name, "seven");
    /// let again = cache.get_with(7, || unreachable!("a hit does not load"));
    /// assert_eq!(again, "seven");
    /// assert_eq!(cache.stats().load_successes, 1);
    /// ```
    pub fn get_with(&self, key: K, init: impl FnOnce() -> V) -> V {
        match self.try_get_with(key, || Ok::<V, Infallible>(init())) {
            Ok(value) => value,
            Err(LoadError::Failed(never)) => match *never {},
            Err(LoadError::Panicked { message }) => panic!("{}", followed_panic(&message)),
        }
    }

    /// The value for `key`, computed by `init` on a miss, or the error of the load.
    ///
    /// Concurrent calls for the same missing key run one `init` between them and share
    /// its result: all get the value, or all get the same `Arc`'d error. A failed load is
    /// not cached (the next call loads again) unless [`CacheBuilder::negative_ttl`] is
    /// set, in which case calls within that time get the same error without loading. If
    /// `init` panics, the panic is resumed in this caller and the callers waiting on it
    /// get [`LoadError::Panicked`]. (`E` is `Send + Sync + 'static` because those waiters,
    /// on other threads, share it.)
    ///
    /// A stale or aging entry is served and refreshed as described under
    /// [`CacheBuilder::stale_while_revalidate`] and [`CacheBuilder::refresh_after`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use minicache::{Cache, LoadError};
    ///
    /// let cache: Cache<&str, u32> = Cache::builder().negative_ttl(Duration::from_secs(5)).build();
    /// let first = cache.try_get_with("user:1", || Err::<u32, _>("db down"));
    /// assert!(matches!(first, Err(LoadError::Failed(ref e)) if **e == "db down"));
    /// // Within 5 s the failure is remembered: this closure does not run.
    /// let second = cache.try_get_with("user:1", || Ok::<u32, &str>(1));
    /// assert!(second.is_err());
    /// ```
    pub fn try_get_with<E, F>(&self, key: K, init: F) -> Result<V, LoadError<E>>
    where
        E: Send + Sync + 'static,
        F: FnOnce() -> Result<V, E>,
    {
        let current = match self.start_load::<E>(&key) {
            ControlFlow::Break(answer) => return answer,
            ControlFlow::Continue(current) => current,
        };
        let state = self.loading_state();
        loop {
            match state.flights.claim(key.clone()) {
                Claim::Leader(leader) => {
                    if let Some(value) = self.loaded_meanwhile(leader.key(), current.as_ref()) {
                        let _ = leader.complete(Ok(value.clone()));
                        return Ok(value);
                    }
                    let started = self.now();
                    let outcome = panic::catch_unwind(AssertUnwindSafe(init));
                    return self.settle(leader, outcome, started, Self::settle_mode(current));
                }
                Claim::Follower(follower) => {
                    if let Some(peek) = current {
                        return Ok(peek.value); // someone is refreshing what this caller can serve
                    }
                    let waiting = Waiting::new(&state.waiters);
                    let answer = follower.wait();
                    drop(waiting);
                    if let Some(result) = Self::follower_result(answer) {
                        return result;
                    }
                }
            }
        }
    }

    /// [`Cache::get_with`] with a future: on a miss, `init` is awaited (once, across
    /// concurrent callers). If the caller running `init` is cancelled (its future
    /// dropped), a waiting caller takes over and awaits its own `init`.
    pub async fn get_with_async<Fut>(&self, key: K, init: Fut) -> V
    where
        Fut: Future<Output = V>,
    {
        match self.try_get_with_async(key, async { Ok::<V, Infallible>(init.await) }).await {
            Ok(value) => value,
            Err(LoadError::Failed(never)) => match *never {},
            Err(LoadError::Panicked { message }) => panic!("{}", followed_panic(&message)),
        }
    }

    /// [`Cache::try_get_with`] with a future. If the caller running `init` is cancelled,
    /// a waiting caller takes over and awaits its own `init`.
    pub async fn try_get_with_async<E, Fut>(&self, key: K, init: Fut) -> Result<V, LoadError<E>>
    where
        E: Send + Sync + 'static,
        Fut: Future<Output = Result<V, E>>,
    {
        let current = match self.start_load::<E>(&key) {
            ControlFlow::Break(answer) => return answer,
            ControlFlow::Continue(current) => current,
        };
        let state = self.loading_state();
        loop {
            match state.flights.claim(key.clone()) {
                Claim::Leader(leader) => {
                    if let Some(value) = self.loaded_meanwhile(leader.key(), current.as_ref()) {
                        let _ = leader.complete(Ok(value.clone()));
                        return Ok(value);
                    }
                    let started = self.now();
                    let outcome = flight::catch_unwind_future(init).await;
                    return self.settle(leader, outcome, started, Self::settle_mode(current));
                }
                Claim::Follower(follower) => {
                    if let Some(peek) = current {
                        return Ok(peek.value);
                    }
                    let waiting = Waiting::new(&state.waiters);
                    let answer = follower.wait_async().await;
                    drop(waiting);
                    if let Some(result) = Self::follower_result(answer) {
                        return result;
                    }
                }
            }
        }
    }

    /// Forgets a remembered failed load of `key`, so the next `try_get_with` loads again
    /// at once. Returns whether there was one. (`invalidate` does not touch failures.)
    pub fn invalidate_failure(&self, key: &K) -> bool {
        self.loading_state().failures.lock().remove(key).is_some()
    }

    /// Keys with a load or refresh running now.
    pub fn loads_in_flight(&self) -> usize {
        self.loading_state().flights.in_flight()
    }

    /// Callers waiting now on a load another caller is running (a gauge: during a
    /// stampede on one key it climbs to the number of callers minus one).
    pub fn load_waiters(&self) -> usize {
        self.loading_state().waiters.load(Ordering::SeqCst)
    }

    // -- the steps, shared by the sync and async forms --

    fn loading_state(&self) -> &LoadingState<K, V> {
        let erased = self.loading_options().state.get_or_init(|| {
            Arc::new(LoadingState::<K, V> {
                flights: SingleFlight::new(),
                failures: parking_lot::Mutex::new(HashMap::default()),
                background_refreshes: Arc::new(AtomicUsize::new(0)),
                waiters: AtomicUsize::new(0),
            })
        });
        erased.downcast_ref::<LoadingState<K, V>>().expect("a cache's loading state is made for its own K and V")
    }

    fn refresh_loader(&self) -> Option<RefreshLoader<K, V>> {
        let erased = self.loading_options().refresh_loader.as_ref()?;
        let loader = erased.downcast_ref::<RefreshLoader<K, V>>();
        Some(loader.expect("the builder stores a refresh loader for the cache's own K and V").clone())
    }

    /// What the sync and async loads do first: answer from the cache (a fresh value, a
    /// remembered failure, or a stale value whose refresh went to the background), or go on
    /// to load, with the entry to refresh if there is one.
    fn start_load<E: Send + Sync + 'static>(&self, key: &K) -> ControlFlow<Result<V, LoadError<E>>, Option<Peek<V>>> {
        match self.look_up_for_load::<E>(key) {
            Lookup::Fresh(value) => ControlFlow::Break(Ok(value)),
            Lookup::Failed(error) => ControlFlow::Break(Err(LoadError::Failed(error))),
            Lookup::NeedsRefresh(peek) if self.refresh_in_background(key, peek.inserted_at) => {
                ControlFlow::Break(Ok(peek.value))
            }
            Lookup::NeedsRefresh(peek) => ControlFlow::Continue(Some(peek)),
            Lookup::Miss => ControlFlow::Continue(None),
        }
    }

    /// The read a loading call starts with: the entry (fresh, or wanting a refresh), a
    /// remembered failure, or nothing.
    fn look_up_for_load<E: Send + Sync + 'static>(&self, key: &K) -> Lookup<V, E> {
        if let Some(peek) = self.lookup_with_meta(key) {
            return if self.wants_refresh(&peek) { Lookup::NeedsRefresh(peek) } else { Lookup::Fresh(peek.value) };
        }
        match self.remembered_failure::<E>(key) {
            Some(error) => Lookup::Failed(error),
            None => Lookup::Miss,
        }
    }

    /// Whether a read now of this entry should refresh it: it is stale (past expiry,
    /// inside the grace window), older than `refresh_after`, or XFetch draws "early".
    fn wants_refresh(&self, peek: &Peek<V>) -> bool {
        let options = self.loading_options();
        if peek.expires_at.is_none() && options.refresh_after.is_none() {
            return false; // nothing to measure against: spare the hit a clock read
        }
        let now = self.now();
        if peek.expires_at.is_some_and(|expires_at| expires_at <= now) {
            return true;
        }
        if options.refresh_after.is_some_and(|age| now.saturating_sub(peek.inserted_at) >= nanos(age)) {
            return true;
        }
        match (&options.xfetch, peek.expires_at) {
            (Some(xfetch), Some(expires_at)) => xfetch.should_recompute_early(now, expires_at, peek.load_nanos),
            _ => false,
        }
    }

    /// A leader's last look before it loads. Between this caller's read and its claim,
    /// another leader may have finished (it stores before it lets go of the flight), and
    /// loading again would break "one load": on a miss, any fresh entry now is that load;
    /// on a refresh, an entry inserted after the one this caller saw is that refresh.
    fn loaded_meanwhile(&self, key: &K, seen: Option<&Peek<V>>) -> Option<V> {
        let now = self.now();
        match seen {
            // `contains_key` first: it counts nothing, so the common case (still a miss)
            // leaves the stats alone.
            None if !self.contains_key(key) => None,
            None => {
                self.lookup_with_meta(key).filter(|peek| peek.expires_at.is_none_or(|at| at > now)).map(|p| p.value)
            }
            Some(seen) => {
                self.lookup_with_meta(key).filter(|peek| peek.inserted_at > seen.inserted_at).map(|p| p.value)
            }
        }
    }

    fn settle_mode(current: Option<Peek<V>>) -> Settle<V> {
        match current {
            Some(peek) => Settle::Revalidate { current: peek.value },
            None => Settle::Load,
        }
    }

    /// A follower's answer in the caller's terms; `None`: claim again (the leader was
    /// abandoned, or failed with another error type than this caller's).
    fn follower_result<E: Send + Sync + 'static>(answer: Wait<V, ErasedError>) -> Option<Result<V, LoadError<E>>> {
        match answer {
            Wait::Finished(Ok(value)) => Some(Ok(value)),
            Wait::Finished(Err(error)) => typed_error::<E>(error).map(Err),
            Wait::Abandoned => None,
        }
    }

    /// Stores a leader's outcome (value into the cache, failure into the negative cache,
    /// stats either way) and only then publishes it to the followers, so that a caller
    /// arriving after the flight ends finds the value instead of loading it again.
    fn settle<E: Send + Sync + 'static>(
        &self,
        leader: Leader<K, V, ErasedError>,
        outcome: Result<Result<V, E>, PanicPayload>,
        started: Nanos,
        mode: Settle<V>,
    ) -> Result<V, LoadError<E>> {
        let load_nanos = self.now().saturating_sub(started);
        match outcome {
            Ok(Ok(value)) => {
                self.record_load(true, load_nanos);
                self.insert_loaded(leader.key().clone(), value.clone(), load_nanos);
                self.forget_failure(leader.key());
                let _ = leader.complete(Ok(value.clone()));
                Ok(value)
            }
            Ok(Err(error)) => {
                self.record_load(false, load_nanos);
                let error = Arc::new(error);
                let erased: ErasedError = error.clone();
                match mode {
                    Settle::Revalidate { current } => {
                        // A failed revalidation: the value the caller could serve is still
                        // the best answer, for it and for anyone who waited.
                        let _ = leader.complete(Ok(current.clone()));
                        return Ok(current);
                    }
                    Settle::Load => self.remember_failure(leader.key(), &erased),
                    Settle::Refresh => {}
                }
                let _ = leader.complete(Err(erased));
                Err(LoadError::Failed(error))
            }
            Err(payload) => {
                self.record_load(false, load_nanos);
                leader.complete_panicked(flight::panic_message(payload.as_ref()));
                panic::resume_unwind(payload)
            }
        }
    }

    // -- negative caching --

    fn remembered_failure<E: Send + Sync + 'static>(&self, key: &K) -> Option<Arc<E>> {
        self.loading_options().negative_ttl?;
        let now = self.now();
        let mut failures = self.loading_state().failures.lock();
        let failure = failures.get(key)?;
        if failure.expires_at <= now {
            failures.remove(key);
            return None;
        }
        ErasedError::clone(&failure.error).downcast::<E>().ok()
    }

    fn remember_failure(&self, key: &K, error: &ErasedError) {
        let options = self.loading_options();
        let Some(ttl) = options.negative_ttl else { return };
        let now = self.now();
        let mut failures = self.loading_state().failures.lock();
        if failures.len() >= options.max_negative_entries && !failures.contains_key(key) {
            failures.retain(|_, failure| failure.expires_at > now);
            if failures.len() >= options.max_negative_entries {
                return; // full of live failures: this one is not remembered
            }
        }
        failures.insert(
            key.clone(),
            CachedFailure { error: Arc::clone(error), expires_at: now.saturating_add(nanos(ttl)) },
        );
        assert!(failures.len() <= options.max_negative_entries, "the negative cache stays within its bound");
    }

    fn forget_failure(&self, key: &K) {
        if self.loading_options().negative_ttl.is_some() {
            self.loading_state().failures.lock().remove(key);
        }
    }

    // -- background refresh --

    /// Starts a background refresh of `key` with the refresh loader, unless one is
    /// running already. Returns `false` when there is no refresh loader (the caller
    /// refreshes in the foreground); `true` means "serve what you have".
    fn refresh_in_background(&self, key: &K, seen_inserted_at: Nanos) -> bool {
        let Some(loader) = self.refresh_loader() else { return false };
        let state = self.loading_state();
        let leader = match state.flights.claim(key.clone()) {
            Claim::Leader(leader) => leader,
            Claim::Follower(_) => return true, // one is running: this is the "no second refresh"
        };
        let seen = self.lookup_with_meta(key).filter(|peek| peek.inserted_at > seen_inserted_at);
        if let Some(refreshed) = seen {
            let _ = leader.complete(Ok(refreshed.value)); // refreshed since this caller looked
            return true;
        }
        let Some(slot) = BackgroundSlot::take(&state.background_refreshes) else {
            return true; // at the limit: leave the refresh to a later read (dropping `leader` ends the flight)
        };
        let cache = self.clone();
        match loader {
            RefreshLoader::Blocking(load) => {
                let job = move || {
                    let _slot = slot;
                    cache.run_refresh(leader, |key| load(key));
                };
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => drop(runtime.spawn_blocking(job)),
                    // If the thread cannot start, the job is dropped with the leader in it:
                    // the flight ends, and a later read tries again.
                    Err(_) => drop(std::thread::Builder::new().name(REFRESH_THREAD_NAME.to_string()).spawn(job)),
                }
            }
            RefreshLoader::Async(load) => {
                let refresh = load(key.clone());
                let job = async move {
                    let _slot = slot;
                    let started = cache.now();
                    let outcome = flight::catch_unwind_future(refresh).await;
                    cache.finish_refresh(leader, outcome, started);
                };
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => drop(runtime.spawn(job)),
                    Err(_) => {
                        let thread =
                            std::thread::Builder::new().name(REFRESH_THREAD_NAME.to_string()).spawn(move || {
                                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                                    Ok(runtime) => runtime.block_on(job),
                                    Err(_) => drop(job), // no runtime, no refresh: the flight ends
                                }
                            });
                        drop(thread);
                    }
                }
            }
        }
        true
    }

    fn run_refresh(&self, leader: Leader<K, V, ErasedError>, load: impl FnOnce(&K) -> Result<V, BoxError>) {
        let started = self.now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| load(leader.key())));
        self.finish_refresh(leader, outcome, started);
    }

    /// A background refresh's outcome goes through `settle` like any load. A panicking
    /// refresh loader is resumed on its own thread or task (which it ends, with the panic
    /// message on stderr), not hidden.
    fn finish_refresh(
        &self,
        leader: Leader<K, V, ErasedError>,
        outcome: Result<Result<V, BoxError>, PanicPayload>,
        started: Nanos,
    ) {
        let _ = self.settle(leader, outcome, started, Settle::Refresh);
    }
}

/// The loading settings. Each says what it is for; they combine freely.
impl<K, V> CacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Keeps an expired entry for `grace` more, so that a loading read
    /// ([`Cache::get_with`] and friends) serves it stale while one refresh runs, instead
    /// of every reader waiting for a load. Plain `get` never returns a stale entry. The
    /// refresh runs in the background with the refresh loader if there is one
    /// ([`CacheBuilder::refresh_loader`]), otherwise in the reader that found it stale.
    /// Needs an expiry (`time_to_live` and the like) to mean anything.
    pub fn stale_while_revalidate(mut self, grace: Duration) -> Self {
        self.loading.stale_grace = grace;
        self
    }

    /// Refreshes an entry on the first loading read after it is `age` old, serving the
    /// current value meanwhile (refresh-ahead; Caffeine's `refreshAfterWrite`). Set it
    /// below the time to live, so that hot keys are renewed before they expire.
    ///
    /// ```
    /// use std::time::Duration;
    /// use minicache::Cache;
    ///
    /// fn fetch_price(sku: &u64) -> Result<u32, std::io::Error> {
    ///     Ok(100 + (*sku as u32)) // a database or service call, in real life
    /// }
    ///
    /// let prices: Cache<u64, u32> = Cache::builder()
    ///     .max_capacity(10_000)
    ///     .time_to_live(Duration::from_secs(60))
    ///     .refresh_after(Duration::from_secs(45)) // renewed in the background after 45 s
    ///     .stale_while_revalidate(Duration::from_secs(30)) // or served stale up to 30 s late
    ///     .refresh_loader(fetch_price)
    ///     .build();
    /// let price = prices.try_get_with(3, || fetch_price(&3));
    /// assert_eq!(price.ok(), Some(103));
    /// ```
    pub fn refresh_after(mut self, age: Duration) -> Self {
        self.loading.refresh_after = Some(age);
        self
    }

    /// Registers the loader background refreshes run (refresh-ahead, stale-while-
    /// revalidate, XFetch). With one, a refresh never delays a reader: inside a tokio
    /// runtime it runs on `spawn_blocking`, elsewhere on a `minicache-refresh` thread.
    /// Misses still load with the `init` of the call that missed.
    pub fn refresh_loader<E>(mut self, load: impl Fn(&K) -> Result<V, E> + Send + Sync + 'static) -> Self
    where
        E: Into<BoxError>,
    {
        let load: BlockingLoader<K, V> = Arc::new(move |key: &K| load(key).map_err(Into::into));
        self.loading.refresh_loader = Some(Arc::new(RefreshLoader::Blocking(load)));
        self
    }

    /// [`CacheBuilder::refresh_loader`] for an async loader: inside a tokio runtime a
    /// refresh is a spawned task; elsewhere, a `minicache-refresh` thread with a
    /// current-thread runtime of its own.
    pub fn async_refresh_loader<Fut, E>(mut self, load: impl Fn(K) -> Fut + Send + Sync + 'static) -> Self
    where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let load: AsyncLoader<K, V> = Arc::new(move |key: K| {
            let refresh = load(key);
            Box::pin(async move { refresh.await.map_err(Into::into) })
        });
        self.loading.refresh_loader = Some(Arc::new(RefreshLoader::Async(load)));
        self
    }

    /// Turns on XFetch: a loading read of a fresh entry recomputes it early with
    /// probability `exp(-remaining / (δ·β))`, δ being how long that entry's load took.
    /// `XFetch::default()` is β = 1; [`XFetch::new`] takes another β, and
    /// [`XFetch::with_random`] a seeded random source for tests.
    pub fn xfetch(mut self, xfetch: XFetch) -> Self {
        self.loading.xfetch = Some(xfetch);
        self
    }

    /// Remembers a failed load for `ttl`: until then, `try_get_with` for that key returns
    /// the same error without loading. Off by default (every call after a failure loads
    /// again). A load that panicked is never remembered.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.loading.negative_ttl = Some(ttl);
        self
    }

    /// The most failed loads remembered at once ([`DEFAULT_MAX_NEGATIVE_ENTRIES`] unless
    /// set). When it is full of unexpired failures, a new failure is not remembered.
    pub fn max_negative_entries(mut self, max: usize) -> Self {
        self.loading.max_negative_entries = max;
        self
    }
}
