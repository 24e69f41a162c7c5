//! Single-flight: per key, one caller runs the loader and every concurrent caller for the
//! same key waits for, and shares, its result.
//!
//! This is what stops a *cache stampede*: a hot key expires, a thousand requests miss at
//! once, and without coordination all thousand run the same expensive query against the
//! database behind the cache. With a [`SingleFlight`] in front of the loader, the first
//! caller becomes the key's **leader** and runs it; the other 999 become **followers**
//! and sleep until the leader publishes. (Go's `golang.org/x/sync/singleflight` and the
//! "waiter map" in moka and Caffeine are the same idea.)
//!
//! What happens when the leader does not return normally is the part that is easy to get
//! wrong, so it is decided here, once:
//!
//! - **The loader returns an error**: every follower gets that same error, shared as an
//!   `Arc<E>` ([`LoadError::Failed`]). Nothing is retried; the next call after the flight
//!   ends starts a new load.
//! - **The loader panics**: every follower is woken with [`LoadError::Panicked`] (with
//!   the panic message), and the caller that ran the loader gets the *original panic*
//!   resumed, so a bug in a loader still crashes where it happened, with its own payload.
//!   No follower hangs, and the key's flight is removed, so the next call loads again.
//! - **The leader goes away without an answer**: an async caller whose future is dropped
//!   mid-load (a timeout, a cancelled request), or a [`Leader`] dropped unused. Then the
//!   followers are told the flight was *abandoned* and **one of them takes over**: each
//!   goes back to [`SingleFlight::claim`], one becomes the new leader and runs its own
//!   loader, the rest follow it. A cancelled request must not fail the requests that
//!   happened to be waiting behind it.
//!
//! The leader is a value, [`Leader`], not just a stack frame: a caller can claim a key
//! here and hand the `Leader` to a background thread or task that completes it later.
//! The cache's refresh-ahead and stale-while-revalidate do exactly that, which is how
//! "one refresh at a time per key" falls out of the same map as "one load at a time".
//!
//! Blocking is done with [`crate::sync`]'s `Mutex` and `Condvar` (shuttle's under the
//! `shuttle` feature, so `tests/shuttle.rs` explores this code's interleavings) and, for
//! async followers, a `tokio::sync::Notify`. A sync caller may follow an async leader and
//! the other way round: one flight map serves both.
//!
//! Left out:
//! - Timeouts. A follower waits as long as the leader runs; a loader that may hang should
//!   carry its own timeout (a `tokio::time::timeout` around the future, say).
//! - Re-entrancy. A loader that asks the same `SingleFlight` for its own key waits on
//!   itself forever, as it would in moka or Caffeine. Load other keys freely.
//! - Sharding. In-flight loads sit in one mutex-guarded map. It is touched only on a
//!   miss, and a miss already costs a load, so one lock is not the bottleneck here
//!   (moka keeps its waiters in a concurrent hash map instead).

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::task::Poll;

use crate::sync::{Condvar, Mutex};

/// Why a load gave no value.
pub enum LoadError<E> {
    /// The loader returned this error. Every caller that waited on the load gets the same
    /// `Arc`, so an error need not be `Clone`.
    Failed(Arc<E>),
    /// The loader panicked (in this caller or in the one it was waiting on). `message` is
    /// the panic's message when it was a string.
    Panicked { message: String },
}

impl<E> Clone for LoadError<E> {
    fn clone(&self) -> Self {
        match self {
            LoadError::Failed(error) => LoadError::Failed(Arc::clone(error)),
            LoadError::Panicked { message } => LoadError::Panicked { message: message.clone() },
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Failed(error) => f.debug_tuple("Failed").field(error).finish(),
            LoadError::Panicked { message } => f.debug_struct("Panicked").field("message", message).finish(),
        }
    }
}

impl<E: fmt::Display> fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Failed(error) => write!(f, "the loader failed: {error}"),
            LoadError::Panicked { message } => write!(
                f,
                "the loader panicked ({message}); nothing was stored for the key, so the next call runs a loader again"
            ),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LoadError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Failed(error) => Some(error.as_ref()),
            LoadError::Panicked { .. } => None,
        }
    }
}

impl<E> LoadError<E> {
    /// The error the loader returned, if it returned one (rather than panicking).
    pub fn failure(&self) -> Option<&Arc<E>> {
        match self {
            LoadError::Failed(error) => Some(error),
            LoadError::Panicked { .. } => None,
        }
    }

    /// Whether the loader panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, LoadError::Panicked { .. })
    }
}

/// The message of a panic payload (`panic!` gives a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// Awaits `future`, catching a panic raised while polling it (`catch_unwind` for a future).
///
/// A panic inside `poll` must be caught in the poll that raised it: if it escaped to the
/// executor, a [`Leader`] held by the future would be dropped later, by the runtime, with
/// no panic in progress, and look *abandoned*, so its followers would load again instead
/// of learning that the loader panicked.
pub(crate) async fn catch_unwind_future<F: Future>(future: F) -> Result<F::Output, Box<dyn Any + Send>> {
    let mut future = std::pin::pin!(future);
    // AssertUnwindSafe: after a panic the future is never polled again.
    std::future::poll_fn(|cx| match panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
        Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(payload) => Poll::Ready(Err(payload)),
    })
    .await
}

/// A deliberately broken variant of the protocol, to show that `tests/shuttle.rs` can
/// fail. Only built with the `shuttle` feature; never use it for anything else.
#[cfg(feature = "shuttle")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The correct protocol.
    None,
    /// `claim` looks the key up under one lock acquisition and inserts under another:
    /// two callers can both see "no flight" and both lead (the classic check-then-act
    /// race). Shows up as the loader running twice.
    CheckThenInsert,
    /// A leader that panics removes its flight but never wakes its followers. Shows up as
    /// a deadlock: the followers sleep forever.
    NoWakeOnPanic,
}

/// Per-key coordination of loads. Cheap to clone (an `Arc` inside); clones share flights.
pub struct SingleFlight<K, V, E> {
    inner: Arc<Flights<K, V, E>>,
}

impl<K, V, E> Clone for SingleFlight<K, V, E> {
    fn clone(&self) -> Self {
        SingleFlight { inner: Arc::clone(&self.inner) }
    }
}

impl<K, V, E> fmt::Debug for SingleFlight<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleFlight").field("in_flight", &self.inner.calls.lock().len()).finish()
    }
}

/// The loads running now, by key.
type CallMap<K, V, E> = HashMap<K, Arc<Call<V, E>>, foldhash::fast::RandomState>;

struct Flights<K, V, E> {
    /// The loads running now, by key. An entry exists exactly while its leader has not
    /// published: the leader removes it (under this lock) before waking its followers,
    /// so a caller that arrives after the wake-up starts a fresh load.
    calls: Mutex<CallMap<K, V, E>>,
    #[cfg(feature = "shuttle")]
    fault: Fault,
}

/// One load in progress, shared by its leader and followers.
struct Call<V, E> {
    state: Mutex<CallState<V, E>>,
    /// Wakes sync followers (they sleep on `state`'s lock).
    done: Condvar,
    /// Wakes async followers. A tokio `Notify` rather than the condvar, because an async
    /// follower must not block its executor thread.
    done_async: tokio::sync::Notify,
}

enum CallState<V, E> {
    /// The leader has not answered yet.
    Running,
    /// The leader's answer; every follower clones it.
    Finished(Result<V, LoadError<E>>),
    /// The leader went away without an answer: followers claim again.
    Abandoned,
}

/// What [`SingleFlight::claim`] made of the caller.
pub enum Claim<K, V, E> {
    /// No load was running for the key: the caller must run one and complete the
    /// [`Leader`] (dropping it unused abandons the flight and a follower takes over).
    Leader(Leader<K, V, E>),
    /// A load is running: wait on it with [`Follower::wait`] or [`Follower::wait_async`],
    /// or drop the follower to stop waiting (nothing else happens).
    Follower(Follower<V, E>),
}

/// The one caller that runs a key's load. See the module docs for what dropping it does.
pub struct Leader<K, V, E> {
    flights: Arc<Flights<K, V, E>>,
    key: K,
    call: Arc<Call<V, E>>,
    /// Set once the answer is published, so `Drop` knows there is nothing left to do.
    published: bool,
}

/// A caller waiting on another caller's load.
pub struct Follower<V, E> {
    call: Arc<Call<V, E>>,
}

/// What a follower learns when the leader is done.
pub enum Wait<V, E> {
    /// The leader's answer.
    Finished(Result<V, LoadError<E>>),
    /// The leader went away without answering: claim again (one caller will lead).
    Abandoned,
}

impl<K, V, E> Default for SingleFlight<K, V, E>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V, E> SingleFlight<K, V, E>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    pub fn new() -> Self {
        SingleFlight {
            inner: Arc::new(Flights {
                calls: Mutex::new(HashMap::default()),
                #[cfg(feature = "shuttle")]
                fault: Fault::None,
            }),
        }
    }

    /// A flight map with a deliberately broken protocol, for showing that the shuttle
    /// tests catch it.
    #[cfg(feature = "shuttle")]
    pub fn with_fault(fault: Fault) -> Self {
        SingleFlight { inner: Arc::new(Flights { calls: Mutex::new(HashMap::default()), fault }) }
    }

    /// How many keys have a load running now.
    pub fn in_flight(&self) -> usize {
        self.inner.calls.lock().len()
    }

    /// Becomes the key's leader if no load is running for it, or a follower of the load
    /// that is. The check and the registration happen under one lock acquisition, which
    /// is what makes "exactly one leader" true.
    pub fn claim(&self, key: K) -> Claim<K, V, E> {
        #[cfg(feature = "shuttle")]
        if self.inner.fault == Fault::CheckThenInsert {
            return self.claim_check_then_insert(key);
        }
        let mut calls = self.inner.calls.lock();
        if let Some(call) = calls.get(&key) {
            return Claim::Follower(Follower { call: Arc::clone(call) });
        }
        let call = Arc::new(Call::new());
        calls.insert(key.clone(), Arc::clone(&call));
        drop(calls);
        Claim::Leader(Leader { flights: Arc::clone(&self.inner), key, call, published: false })
    }

    /// The broken claim: look, let go of the lock, then insert.
    #[cfg(feature = "shuttle")]
    fn claim_check_then_insert(&self, key: K) -> Claim<K, V, E> {
        let running = self.inner.calls.lock().get(&key).cloned();
        if let Some(call) = running {
            return Claim::Follower(Follower { call });
        }
        let call = Arc::new(Call::new());
        self.inner.calls.lock().insert(key.clone(), Arc::clone(&call));
        Claim::Leader(Leader { flights: Arc::clone(&self.inner), key, call, published: false })
    }

    /// Runs `load` for `key` unless a load for it is running already, in which case waits
    /// for that one and returns its result. If the leader being waited on is abandoned,
    /// this caller claims again and may end up running `load` itself.
    ///
    /// If `load` panics, the panic is resumed here, after every follower was woken with
    /// [`LoadError::Panicked`].
    pub fn run<F>(&self, key: K, load: F) -> Result<V, LoadError<E>>
    where
        F: FnOnce() -> Result<V, E>,
    {
        let leader = loop {
            match self.claim(key.clone()) {
                Claim::Leader(leader) => break leader,
                Claim::Follower(follower) => match follower.wait() {
                    Wait::Finished(result) => return result,
                    Wait::Abandoned => continue,
                },
            }
        };
        leader.run(load)
    }

    /// [`SingleFlight::run`] for a future. If this call's future is dropped while it leads,
    /// the flight is abandoned and one of its followers takes over with its own future.
    pub async fn run_async<Fut>(&self, key: K, load: Fut) -> Result<V, LoadError<E>>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let leader = loop {
            match self.claim(key.clone()) {
                Claim::Leader(leader) => break leader,
                Claim::Follower(follower) => match follower.wait_async().await {
                    Wait::Finished(result) => return result,
                    Wait::Abandoned => continue,
                },
            }
        };
        leader.run_async(load).await
    }
}

impl<V, E> Call<V, E> {
    fn new() -> Self {
        Call { state: Mutex::new(CallState::Running), done: Condvar::new(), done_async: tokio::sync::Notify::new() }
    }
}

impl<K: Hash + Eq, V: Clone, E> Leader<K, V, E> {
    /// The key this leader loads.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Runs `load` and publishes its result. A panic in `load` wakes the followers with
    /// [`LoadError::Panicked`] and is then resumed in this caller.
    pub fn run<F>(self, load: F) -> Result<V, LoadError<E>>
    where
        F: FnOnce() -> Result<V, E>,
    {
        // AssertUnwindSafe: after a panic, nothing `load` may have left half-done is read
        // again; the only state we touch is the call, which `load` cannot see.
        match panic::catch_unwind(AssertUnwindSafe(load)) {
            Ok(result) => self.complete(result),
            Err(payload) => {
                self.complete_panicked(panic_message(payload.as_ref()));
                panic::resume_unwind(payload)
            }
        }
    }

    /// [`Leader::run`] for a future. Dropping the returned future before it finishes
    /// drops this leader unpublished, which abandons the flight (followers take over).
    pub async fn run_async<Fut>(self, load: Fut) -> Result<V, LoadError<E>>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let outcome = catch_unwind_future(load).await;
        match outcome {
            Ok(result) => self.complete(result),
            Err(payload) => {
                self.complete_panicked(panic_message(payload.as_ref()));
                panic::resume_unwind(payload)
            }
        }
    }

    /// Publishes the loader's result to every follower and returns it (the error wrapped
    /// in the same `Arc` the followers get).
    pub fn complete(mut self, result: Result<V, E>) -> Result<V, LoadError<E>> {
        let result = result.map_err(|error| LoadError::Failed(Arc::new(error)));
        self.publish(CallState::Finished(result.clone()));
        result
    }

    /// Publishes "the loader panicked" to every follower.
    pub fn complete_panicked(mut self, message: String) {
        #[cfg(feature = "shuttle")]
        if self.flights.fault == Fault::NoWakeOnPanic {
            // The broken variant: forget the flight, wake nobody.
            self.unregister();
            self.published = true;
            return;
        }
        self.publish(CallState::Finished(Err(LoadError::Panicked { message })));
    }

    /// Removes this call from the map, but only if the map still holds *this* call.
    fn unregister(&self) {
        let mut calls = self.flights.calls.lock();
        if calls.get(&self.key).is_some_and(|registered| Arc::ptr_eq(registered, &self.call)) {
            calls.remove(&self.key);
        }
    }

    fn publish(&mut self, answer: CallState<V, E>) {
        assert!(!self.published, "a flight's leader publishes once");
        assert!(!matches!(answer, CallState::Running), "a leader publishes an answer, not Running");
        // Unregister first: a caller arriving after a follower wakes must find no flight
        // and start its own load, never join one that has already answered.
        self.unregister();
        {
            let mut state = self.call.state.lock();
            assert!(matches!(*state, CallState::Running), "only the leader changes a call's state");
            *state = answer;
        }
        self.published = true;
        self.call.done.notify_all();
        self.call.done_async.notify_waiters();
    }
}

impl<K, V, E> Drop for Leader<K, V, E> {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        // A leader dropped unpublished: while a panic unwinds through the loader's caller
        // (a panic `run` did not catch, e.g. in code around it) the followers get the
        // panic; otherwise the leader was cancelled or discarded and a follower takes over.
        let answer = if std::thread::panicking() {
            CallState::Finished(Err(LoadError::Panicked {
                message: "the loading caller panicked before it published a result".to_string(),
            }))
        } else {
            CallState::Abandoned
        };
        // `publish` needs `K: Hash + Eq`, which `Drop` cannot require; do its steps here.
        let mut calls = self.flights.calls.lock();
        calls.retain(|_, registered| !Arc::ptr_eq(registered, &self.call));
        drop(calls);
        *self.call.state.lock() = answer;
        self.published = true;
        self.call.done.notify_all();
        self.call.done_async.notify_waiters();
    }
}

impl<V: Clone, E> Follower<V, E> {
    /// Blocks the thread until the leader answers or goes away.
    pub fn wait(self) -> Wait<V, E> {
        let mut state = self.call.state.lock();
        loop {
            match &*state {
                CallState::Running => state = self.call.done.wait(state),
                CallState::Finished(result) => return Wait::Finished(result.clone()),
                CallState::Abandoned => return Wait::Abandoned,
            }
        }
    }

    /// Waits, without blocking the executor, until the leader answers or goes away.
    pub async fn wait_async(self) -> Wait<V, E> {
        loop {
            // Register for the wake-up *before* looking at the state: a `notify_waiters`
            // between the look and the registration would otherwise be missed.
            let notified = self.call.done_async.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let seen = match &*self.call.state.lock() {
                CallState::Running => None,
                CallState::Finished(result) => Some(Wait::Finished(result.clone())),
                CallState::Abandoned => Some(Wait::Abandoned),
            };
            if let Some(answer) = seen {
                return answer;
            }
            notified.await;
        }
    }
}

#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_lone_caller_runs_the_loader_and_the_flight_is_gone_after() {
        let flight: SingleFlight<&str, u32, String> = SingleFlight::new();
        assert_eq!(flight.run("k", || Ok(7)).ok(), Some(7));
        assert_eq!(flight.in_flight(), 0);
        let error = flight.run("k", || Err("db down".to_string())).err();
        assert_eq!(error.and_then(|e| e.failure().map(|e| e.as_str().to_string())), Some("db down".to_string()));
        assert_eq!(flight.in_flight(), 0);
    }

    #[test]
    fn concurrent_callers_share_one_load() {
        // The leader is held open until all seven others are in: each must become a
        // follower and get the leader's value, whatever the scheduling (a sleep in the
        // loader instead would let a late thread start a second load on a busy machine).
        let flight: SingleFlight<u32, u32, String> = SingleFlight::new();
        let Claim::Leader(leader) = flight.claim(1) else { panic!("the first claim leads") };
        let followed = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let waiting: Vec<_> = (0..7)
                .map(|_| {
                    scope.spawn(|| {
                        let Claim::Follower(follower) = flight.claim(1) else {
                            panic!("a second leader while the first is running")
                        };
                        followed.fetch_add(1, Ordering::SeqCst);
                        match follower.wait() {
                            Wait::Finished(result) => assert_eq!(result.ok(), Some(42)),
                            Wait::Abandoned => panic!("the leader completed; nothing was abandoned"),
                        }
                    })
                })
                .collect();
            while followed.load(Ordering::SeqCst) < 7 {
                std::thread::yield_now();
            }
            assert_eq!(leader.complete(Ok(42)).ok(), Some(42));
            for thread in waiting {
                thread.join().expect("follower");
            }
        });
        assert_eq!(flight.in_flight(), 0);
    }

    #[test]
    fn a_dropped_leader_hands_the_load_to_a_follower() {
        let flight: SingleFlight<u32, u32, String> = SingleFlight::new();
        let Claim::Leader(leader) = flight.claim(1) else { panic!("the first claim leads") };
        let Claim::Follower(follower) = flight.claim(1) else { panic!("the second claim follows") };
        drop(leader);
        assert!(matches!(follower.wait(), Wait::Abandoned));
        assert_eq!(flight.in_flight(), 0);
        assert!(matches!(flight.claim(1), Claim::Leader(_)));
    }

    #[test]
    fn a_leader_can_complete_on_another_thread() {
        let flight: SingleFlight<u32, u32, String> = SingleFlight::new();
        let Claim::Leader(leader) = flight.claim(1) else { panic!("the first claim leads") };
        let Claim::Follower(follower) = flight.claim(1) else { panic!("the second claim follows") };
        let background = std::thread::spawn(move || leader.complete(Ok(5)));
        assert!(matches!(follower.wait(), Wait::Finished(Ok(5))));
        assert!(background.join().is_ok());
    }

    #[test]
    fn a_panicking_loader_wakes_followers_with_the_panic_and_panics_its_caller() {
        let flight: SingleFlight<u32, u32, String> = SingleFlight::new();
        let Claim::Leader(leader) = flight.claim(1) else { panic!("the first claim leads") };
        let Claim::Follower(follower) = flight.claim(1) else { panic!("the second claim follows") };
        let ran = panic::catch_unwind(AssertUnwindSafe(|| leader.run(|| -> Result<u32, String> { panic!("boom") })));
        assert!(ran.is_err(), "the leader's caller gets the panic resumed");
        match follower.wait() {
            Wait::Finished(Err(LoadError::Panicked { message })) => assert_eq!(message, "boom"),
            _ => panic!("the follower must get LoadError::Panicked"),
        }
        assert_eq!(flight.in_flight(), 0);
    }

    #[test]
    fn load_error_messages_say_what_happened() {
        let failed: LoadError<String> = LoadError::Failed(Arc::new("timeout".to_string()));
        assert_eq!(failed.to_string(), "the loader failed: timeout");
        let panicked: LoadError<String> = LoadError::Panicked { message: "boom".to_string() };
        assert!(panicked.to_string().contains("panicked (boom)"));
        assert!(panicked.is_panic() && !failed.is_panic());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_async_follower_waits_for_a_sync_leader() {
        let flight: SingleFlight<u32, u32, String> = SingleFlight::new();
        let Claim::Leader(leader) = flight.claim(1) else { panic!("the first claim leads") };
        let waiter = {
            let flight = flight.clone();
            tokio::spawn(async move { flight.run_async(1, async { Ok(99) }).await.ok() })
        };
        tokio::task::yield_now().await;
        assert_eq!(leader.complete(Ok(3)).ok(), Some(3));
        assert_eq!(waiter.await.ok().flatten(), Some(3), "the follower gets the leader's value, not its own");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_cancelled_async_leader_is_taken_over_by_a_follower() {
        let flight: SingleFlight<u32, u32, String> = SingleFlight::new();
        let leader_loads = Arc::new(AtomicUsize::new(0));
        let leading = {
            let flight = flight.clone();
            let leader_loads = Arc::clone(&leader_loads);
            tokio::spawn(async move {
                flight
                    .run_async(1, async move {
                        leader_loads.fetch_add(1, Ordering::SeqCst);
                        std::future::pending::<()>().await;
                        Ok(0)
                    })
                    .await
            })
        };
        // Let the leader start and park in its loader.
        while leader_loads.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let follower = {
            let flight = flight.clone();
            tokio::spawn(async move { flight.run_async(1, async { Ok(11) }).await.ok() })
        };
        tokio::task::yield_now().await;
        leading.abort();
        assert!(leading.await.is_err_and(|e| e.is_cancelled()));
        assert_eq!(follower.await.ok().flatten(), Some(11), "the follower took over with its own loader");
        assert_eq!(flight.in_flight(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_async_loader_that_panics_wakes_its_followers_with_the_panic() {
        let flight: SingleFlight<u32, u32, String> = SingleFlight::new();
        let Claim::Leader(leader) = flight.claim(1) else { panic!("the first claim leads") };
        let Claim::Follower(follower) = flight.claim(1) else { panic!("the second claim follows") };
        let leading = tokio::spawn(leader.run_async(async {
            tokio::task::yield_now().await;
            panic!("async boom")
        }));
        assert!(leading.await.is_err_and(|e| e.is_panic()));
        assert!(matches!(follower.wait_async().await, Wait::Finished(Err(LoadError::Panicked { .. }))));
        assert_eq!(flight.in_flight(), 0);
    }
}
