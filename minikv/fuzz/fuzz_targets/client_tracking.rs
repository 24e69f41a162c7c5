//! CLIENT TRACKING's argument parsing and mode checks on arbitrary arguments (the input
//! split at NUL bytes; the first byte picks the client's current mode): never panics,
//! and an accepted request is consistent.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use minikv::tracking::{check_enable, parse_tracking};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let args: Vec<&[u8]> = rest.split(|&b| b == 0).collect();
    let existing: BTreeSet<Vec<u8>> = args.iter().take(2).map(|a| a.to_vec()).collect();
    if let Ok(req) = parse_tracking(&args, |id| id % 2 == 1) {
        assert!(req.redirect == 0 || req.redirect % 2 == 1);
        if req.on && check_enable(&req, u32::from(mode) & 0x3f, &existing).is_ok() {
            assert!(!(req.optin && req.optout));
            assert!(req.bcast || req.prefixes.is_empty());
        }
    }
});
