//! Test support for the real-process tests: a TCP proxy per directed link
//! ([`proxy`]) and a cluster of `miniraft` child processes behind them ([`cluster`]).

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod cluster;
pub mod proxy;
