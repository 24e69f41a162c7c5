//! Metrics: per-command counters and latency histograms, and the Prometheus export.
//!
//! Recording happens on every command, on every core, so it must not bounce a cache
//! line between cores. Each thread owns a [`ThreadSlot`] (counters for every command)
//! and is its only writer; a scrape sums the slots. Updates are relaxed atomic loads
//! and stores on memory no other core writes, which compile to plain moves.
//!
//! At scrape time [`KvCollector`] turns the sums into Prometheus metric families
//! (`minikv_commands_total`, `minikv_command_duration_seconds`, ...) that the
//! `prometheus` crate encodes; gauges such as memory and keys per database are read
//! from the server at that moment.
//!
//! INFO commandstats reads the same sums.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam::utils::CachePadded;
use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};

/// Upper bounds of the latency buckets, in nanoseconds (1 µs to 1 s, then +Inf).
pub const LATENCY_BOUNDS_NS: [u64; 16] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    50_000_000,
    250_000_000,
    1_000_000_000,
];
const BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

/// Threads that get a slot of their own. Beyond that, threads share the last slot
/// through atomic read-modify-writes, still correct, slower.
const MAX_THREADS: usize = 64;

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    /// Calls that replied with an error (INFO's `failed_calls`).
    failed: AtomicU64,
    /// Calls refused before running (unknown arity, OOM, NOAUTH: `rejected_calls`).
    rejected: AtomicU64,
    nanos: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

struct ThreadSlot {
    commands: Box<[Counters]>,
}

/// Per-command statistics for a fixed set of commands (indexed by command number).
pub struct CommandStats {
    slots: Box<[CachePadded<ThreadSlot>]>,
    names: Vec<String>,
    next_thread: AtomicUsize,
}

thread_local! {
    static THREAD_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

impl CommandStats {
    pub fn new(names: Vec<String>) -> Self {
        let slots = (0..MAX_THREADS)
            .map(|_| CachePadded::new(ThreadSlot { commands: (0..names.len()).map(|_| Counters::default()).collect() }))
            .collect();
        CommandStats { slots, names, next_thread: AtomicUsize::new(0) }
    }

    #[inline]
    fn slot(&self) -> (usize, bool) {
        THREAD_SLOT.with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = self.next_thread.fetch_add(1, Ordering::Relaxed).min(MAX_THREADS - 1);
                s.set(i);
            }
            // The last slot may be shared; the others have exactly one writer.
            (i, i < MAX_THREADS - 1)
        })
    }

    #[inline]
    fn bump(counter: &AtomicU64, n: u64, exclusive: bool) {
        if exclusive {
            counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        } else {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Records one call of command `cmd` that took `nanos`.
    #[inline]
    pub fn record(&self, cmd: usize, nanos: u64, failed: bool) {
        let (slot, exclusive) = self.slot();
        let c = &self.slots[slot].commands[cmd];
        Self::bump(&c.calls, 1, exclusive);
        Self::bump(&c.nanos, nanos, exclusive);
        if failed {
            Self::bump(&c.failed, 1, exclusive);
        }
        let bucket = LATENCY_BOUNDS_NS.partition_point(|&b| b < nanos);
        Self::bump(&c.buckets[bucket], 1, exclusive);
    }

    /// Records a call refused before it ran.
    pub fn record_rejected(&self, cmd: usize) {
        let (slot, exclusive) = self.slot();
        Self::bump(&self.slots[slot].commands[cmd].rejected, 1, exclusive);
    }

    /// Sums over threads: `(name, calls, nanos, failed, rejected, buckets)`.
    pub fn snapshot(&self) -> Vec<CommandSnapshot> {
        (0..self.names.len())
            .map(|cmd| {
                let mut s = CommandSnapshot { name: self.names[cmd].clone(), ..Default::default() };
                for slot in self.slots.iter() {
                    let c = &slot.commands[cmd];
                    s.calls += c.calls.load(Ordering::Relaxed);
                    s.nanos += c.nanos.load(Ordering::Relaxed);
                    s.failed += c.failed.load(Ordering::Relaxed);
                    s.rejected += c.rejected.load(Ordering::Relaxed);
                    for (b, v) in s.buckets.iter_mut().zip(&c.buckets) {
                        *b += v.load(Ordering::Relaxed);
                    }
                }
                s
            })
            .collect()
    }

    /// Total calls across commands (INFO `total_commands_processed`).
    pub fn total_calls(&self) -> u64 {
        self.snapshot().iter().map(|s| s.calls).sum()
    }

    pub fn reset(&self) {
        for slot in self.slots.iter() {
            for c in slot.commands.iter() {
                c.calls.store(0, Ordering::Relaxed);
                c.nanos.store(0, Ordering::Relaxed);
                c.failed.store(0, Ordering::Relaxed);
                c.rejected.store(0, Ordering::Relaxed);
                for b in &c.buckets {
                    b.store(0, Ordering::Relaxed);
                }
            }
        }
    }
}

#[derive(Default, Clone, Debug)]
pub struct CommandSnapshot {
    pub name: String,
    pub calls: u64,
    pub nanos: u64,
    pub failed: u64,
    pub rejected: u64,
    pub buckets: [u64; BUCKETS],
}

/// A latency histogram for rare events (AOF fsyncs), shared by all threads.
#[derive(Default)]
pub struct SharedHistogram {
    count: AtomicU64,
    nanos: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl SharedHistogram {
    pub fn observe(&self, nanos: u64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        let bucket = LATENCY_BOUNDS_NS.partition_point(|&b| b < nanos);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn to_proto(&self) -> Histogram {
        let buckets: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        histogram_proto(self.count(), self.nanos.load(Ordering::Relaxed), &buckets)
    }
}

fn histogram_proto(count: u64, nanos: u64, buckets: &[u64]) -> Histogram {
    let mut h = Histogram::default();
    h.set_sample_count(count);
    h.set_sample_sum(nanos as f64 / 1e9);
    let mut cumulative = 0;
    let mut out = Vec::with_capacity(LATENCY_BOUNDS_NS.len());
    for (i, bound) in LATENCY_BOUNDS_NS.iter().enumerate() {
        cumulative += buckets[i];
        let mut b = Bucket::default();
        b.set_upper_bound(*bound as f64 / 1e9);
        b.set_cumulative_count(cumulative);
        out.push(b);
    }
    h.set_bucket(out);
    h
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

/// Builds metric families from plain values; used by [`KvCollector`].
pub struct Families(pub Vec<MetricFamily>);

impl Families {
    fn family(&mut self, name: &str, help: &str, kind: MetricType) -> &mut MetricFamily {
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(kind);
        self.0.push(f);
        self.0.last_mut().expect("just pushed")
    }

    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, String)], value: f64) {
        let existing = self.0.iter().position(|f| f.name() == name);
        let fam = match existing {
            Some(i) => &mut self.0[i],
            None => self.family(name, help, MetricType::GAUGE),
        };
        let mut m = Metric::default();
        m.set_label(labels.iter().map(|(k, v)| label(k, v)).collect::<Vec<_>>());
        let mut g = Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
        fam.mut_metric().push(m);
    }

    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, String)], value: f64) {
        let existing = self.0.iter().position(|f| f.name() == name);
        let fam = match existing {
            Some(i) => &mut self.0[i],
            None => self.family(name, help, MetricType::COUNTER),
        };
        let mut m = Metric::default();
        m.set_label(labels.iter().map(|(k, v)| label(k, v)).collect::<Vec<_>>());
        let mut c = Counter::default();
        c.set_value(value);
        m.set_counter(c);
        fam.mut_metric().push(m);
    }

    pub fn command_histograms(&mut self, stats: &[CommandSnapshot]) {
        let fam = self.family(
            "minikv_command_duration_seconds",
            "Time spent executing each command, from parse to reply encoded.",
            MetricType::HISTOGRAM,
        );
        for s in stats.iter().filter(|s| s.calls > 0) {
            let mut m = Metric::default();
            m.set_label(vec![label("cmd", &s.name)]);
            m.set_histogram(histogram_proto(s.calls, s.nanos, &s.buckets));
            fam.mut_metric().push(m);
        }
    }

    pub fn histogram(&mut self, name: &str, help: &str, h: &SharedHistogram) {
        let fam = self.family(name, help, MetricType::HISTOGRAM);
        let mut m = Metric::default();
        m.set_histogram(h.to_proto());
        fam.mut_metric().push(m);
    }
}

/// A `prometheus::core::Collector` that asks a closure for fresh families on each
/// scrape, so gauges never go stale.
pub struct KvCollector {
    desc: Vec<prometheus::core::Desc>,
    gather: Arc<dyn Fn() -> Vec<MetricFamily> + Send + Sync>,
}

impl KvCollector {
    pub fn new(gather: Arc<dyn Fn() -> Vec<MetricFamily> + Send + Sync>) -> Self {
        KvCollector { desc: Vec::new(), gather }
    }
}

impl prometheus::core::Collector for KvCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.desc.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        (self.gather)()
    }
}

/// Process resident set size in bytes, from /proc (0 where unavailable).
pub fn rss_bytes() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    let page = *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            p as u64
        } else {
            4096
        }
    });
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map(|pages| pages * page)
        .unwrap_or(0)
}
