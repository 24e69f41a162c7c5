//! RESP codec micro-benchmarks: parsing a pipeline of requests with `ArgBuf` and
//! encoding replies with `Reply`, the two ends of every command's trip.
//!
//! The pipeline is what redis-benchmark -P 16 sends: many SET and GET commands back to
//! back in one buffer. Throughput is reported per command, so the numbers compare
//! directly with a server's ops/s (the codec's share of a command's cost).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use minikv::resp::{encode_command, ArgBuf, Limits, Parsed, Protocol, Reply};

/// Commands in the parsed pipeline: enough that per-call overhead is amortised, few
/// enough to stay in cache like a real read buffer.
const PIPELINE: usize = 1_000;

/// The same 100-byte value size as the side-by-side memory test.
const VALUE: [u8; 100] = [b'v'; 100];

/// `PIPELINE` commands, alternating `SET key:<n> <value>` and `GET key:<n>`, RESP encoded.
fn set_get_pipeline() -> Vec<u8> {
    let mut buf = Vec::new();
    for n in 0..PIPELINE {
        let key = format!("key:{n}");
        if n % 2 == 0 {
            encode_command([&b"SET"[..], key.as_bytes(), &VALUE].into_iter(), &mut buf);
        } else {
            encode_command([&b"GET"[..], key.as_bytes()].into_iter(), &mut buf);
        }
    }
    buf
}

/// Parses every command in `input`; returns the total argument count (so that the
/// work cannot be optimised away).
fn parse_all(parser: &mut ArgBuf, input: &[u8], limits: &Limits) -> usize {
    let mut pos = 0;
    let mut args = 0;
    while pos < input.len() {
        let rest = &input[pos..];
        match parser.parse(rest, limits) {
            Ok(Parsed::Command { consumed }) => {
                let parsed = parser.args(rest);
                args += parsed.len();
                black_box(parsed.get(1));
                pos += consumed;
            }
            Ok(Parsed::Nothing { consumed }) => pos += consumed,
            Ok(Parsed::Incomplete { .. }) | Err(_) => panic!("the benchmark pipeline is well formed"),
        }
    }
    args
}

fn parse(c: &mut Criterion) {
    let input = set_get_pipeline();
    let limits = Limits::default();
    let mut parser = ArgBuf::new();
    assert_eq!(parse_all(&mut parser, &input, &limits), PIPELINE / 2 * 3 + PIPELINE / 2 * 2);

    let mut group = c.benchmark_group("resp/parse");
    group.throughput(Throughput::Elements(PIPELINE as u64));
    group.bench_function("set_get_pipeline_multibulk", |b| {
        b.iter(|| parse_all(&mut parser, black_box(&input), &limits))
    });
    let inline: Vec<u8> = (0..PIPELINE).flat_map(|n| format!("GET key:{n}\r\n").into_bytes()).collect();
    group.bench_function("get_pipeline_inline", |b| b.iter(|| parse_all(&mut parser, black_box(&inline), &limits)));
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("resp/encode");
    group.throughput(Throughput::Elements(PIPELINE as u64));
    let mut out = Vec::with_capacity(256 * 1024);
    // What a -P 16 SET/GET workload answers: +OK and 100-byte bulk strings.
    group.bench_function("ok_and_bulk_replies", |b| {
        b.iter(|| {
            out.clear();
            let mut reply = Reply::new(&mut out, Protocol::Resp2);
            for n in 0..PIPELINE {
                if n % 2 == 0 {
                    reply.ok();
                } else {
                    reply.bulk(black_box(&VALUE));
                }
            }
            out.len()
        })
    });
    group.bench_function("int_replies", |b| {
        b.iter(|| {
            out.clear();
            let mut reply = Reply::new(&mut out, Protocol::Resp2);
            for n in 0..PIPELINE {
                reply.int(black_box(n as i64 * 7919));
            }
            out.len()
        })
    });
    // An HGETALL-sized map, in both protocols (RESP3 has a native map header).
    for (name, proto) in [("map_of_10_resp2", Protocol::Resp2), ("map_of_10_resp3", Protocol::Resp3)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                let mut reply = Reply::new(&mut out, proto);
                for _ in 0..PIPELINE {
                    reply.map(10);
                    for field in 0..10i64 {
                        reply.bulk_int(field);
                        reply.bulk(&VALUE[..16]);
                    }
                }
                out.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse, encode);
criterion_main!(benches);
