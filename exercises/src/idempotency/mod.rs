//! Idempotency: doing a thing once when the request for it arrives many times.
//!
//! Networks time out, clients retry, queues redeliver, workers die half-way. None of
//! that can be prevented, so the effects are made safe to repeat instead: the request
//! carries a key, the first arrival does the work and stores its result under the key,
//! and every later arrival gets the stored result. Two exercises:
//!
//! - **`idempotency-keys`**: `POST /orders` with an `Idempotency-Key` header, as Stripe
//!   and the IETF draft define it. The key is claimed with `SET NX PX` and the order is
//!   committed together with the stored response in one `WATCH`/`MULTI`/`EXEC`, so
//!   retries, duplicated sends, concurrent duplicates and crashes between claim and
//!   commit all end in one order per key ([`orders`], [`store`], [`keys`], [`record`],
//!   [`pool`]; the scenario is [`idempotency_keys`]).
//! - **`payment`**: payment jobs on the queue, workers that charge a provider and
//!   record the charge in a ledger, killed at every point between the steps. The
//!   provider honours a key per payment and the ledger appends conditionally, so
//!   at-least-once delivery gives exactly-once charges and records ([`payment`],
//!   [`provider`], [`ledger`], [`audit`]).
//!
//! Both speak only RESP and the beanstalk protocol, with commands real Redis 7 and
//! beanstalkd 1.12 have (`SET NX PX`, `WATCH`/`MULTI`/`EXEC`, `HINCRBY`, `RPUSH`;
//! `put`, `reserve-with-timeout`, `release`, `bury`, `delete`, `stats-tube`), so they
//! run unchanged against the real servers. Each has deliberately broken variants
//! ([`store::Variant`], [`payment::Variant`]) that the tests show the checks catching.
//!
//! Left out: Lua scripts (minikv has no `EVAL`; `WATCH` does the same job here with one
//! more round trip), per-tenant key scopes, and a cluster (the record and the effects
//! it commits would have to share a hash slot).

pub mod audit;
pub mod idempotency_keys;
pub mod keys;
pub mod ledger;
pub mod orders;
pub mod payment;
pub mod pool;
pub mod provider;
pub mod record;
pub mod store;

use crate::framework::{Exercise, Needs, Theme};

/// The idempotency exercises, in catalogue order.
pub const EXERCISES: &[Exercise] = &[
    Exercise {
        name: "idempotency-keys",
        theme: Theme::Idempotency,
        summary: "POST /orders with an Idempotency-Key claimed by SET NX PX and committed with WATCH/MULTI: retries, duplicates and crashes run the handler once per key",
        needs: Needs::KV,
        run: |demo| Box::pin(idempotency_keys::demo(demo)),
    },
    Exercise {
        name: "payment",
        theme: Theme::Idempotency,
        summary: "payment jobs on the queue, workers killed before and after each step; a keyed provider and a conditional ledger give zero double charges and zero lost payments",
        needs: Needs::KV_AND_QUEUE,
        run: |demo| Box::pin(payment::demo(demo)),
    },
];
