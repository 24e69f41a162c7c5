//! Shared building blocks of the mini systems.
//!
//! Code lives here only once two systems need it (see `../shared/STYLE.md`):
//!
//! - [`record_log`]: the segmented, CRC-framed, append-only record log. minikv's AOF is
//!   built on it today; the queue, the log broker and Raft reuse it later.
//! - [`lifecycle`]: the TCP accept loop with a connection limit and graceful shutdown on
//!   SIGINT/SIGTERM that lets in-flight replies drain.
//! - [`admin`]: the admin HTTP listener with `/metrics`, `/healthz` and `/readyz`.
//! - [`alloc`]: an allocator adapter that keeps a decoder's absurd capacity request
//!   (from a malformed frame) from aborting the process.

pub mod record_log;

pub mod admin;
pub mod alloc;
pub mod lifecycle;
