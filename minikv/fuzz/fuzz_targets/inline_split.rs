//! Redis's inline-command splitting (`sdssplitargs` rules) on arbitrary lines: never
//! panics, and every argument range lies inside the output buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let mut spans = Vec::new();
    if minikv::resp::split_args(data, &mut out, &mut spans).is_ok() {
        for s in &spans {
            assert!(s.start <= s.end && s.end <= out.len());
        }
    }
});
