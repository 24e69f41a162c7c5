//! Feeds arbitrary bytes to the request parser, whole and in two pieces, the way a
//! connection does. The parser must never panic, never report more bytes consumed than
//! it was given, and parse the same commands however the input is split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minikv::resp::{ArgBuf, Limits, Parsed};

fn parse_all(chunks: &[&[u8]], limits: &Limits) -> Result<Vec<Vec<Vec<u8>>>, String> {
    let mut buf = Vec::new();
    let mut argbuf = ArgBuf::new();
    let mut commands = Vec::new();
    let mut pos = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match argbuf.parse(&buf[pos..], limits) {
                Ok(Parsed::Command { consumed }) => {
                    assert!(consumed > 0 && pos + consumed <= buf.len());
                    commands.push(argbuf.args(&buf[pos..]).iter().map(|a| a.to_vec()).collect());
                    pos += consumed;
                }
                Ok(Parsed::Nothing { consumed }) => {
                    assert!(consumed > 0 && pos + consumed <= buf.len());
                    pos += consumed;
                }
                Ok(Parsed::Incomplete { .. }) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    Ok(commands)
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_bulk_len: 1 << 20, ..Limits::default() };
    let whole = parse_all(&[data], &limits);
    if let Ok(whole) = &whole {
        let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
        let split = parse_all(&[&data[..cut], &data[cut..]], &limits);
        // An error can surface earlier with less input, but successful parses agree.
        if let Ok(split) = split {
            assert_eq!(whole, &split);
        }
    }
});
