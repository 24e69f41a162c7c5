//! Numbers as Redis reads and prints them.
//!
//! Clients compare replies byte for byte, so "1.5" versus "1.50000000000000000" matters.
//! Redis 7.0 prints doubles with `%.17g`, parses them with `strtod`, and does
//! INCRBYFLOAT in C `long double`. We call the same libc routines through the small C
//! shim in `csrc/numeric.c` instead of approximating them in Rust.

use std::ffi::c_char;

extern "C" {
    fn minikv_strtod(s: *const c_char, consumed: *mut usize, erange: *mut i32) -> f64;
    fn minikv_format_g17(v: f64, buf: *mut c_char, cap: usize) -> i32;
    fn minikv_ld_incr(
        base: *const c_char,
        base_len: usize,
        incr: *const c_char,
        incr_len: usize,
        out: *mut c_char,
        cap: usize,
    ) -> i64;
}

/// The longest float text Redis accepts (`MAX_LONG_DOUBLE_CHARS`).
pub const MAX_FLOAT_TEXT: usize = 5 * 1024;

/// What `strtod` made of a byte string.
struct Strtod {
    value: f64,
    consumed: usize,
    erange: bool,
}

fn strtod(s: &[u8]) -> Option<Strtod> {
    if s.len() >= MAX_FLOAT_TEXT {
        return None;
    }
    let mut buf = [0u8; 128];
    let mut heap;
    let nul_terminated: &mut [u8] = if s.len() < buf.len() {
        &mut buf[..s.len() + 1]
    } else {
        heap = vec![0u8; s.len() + 1];
        &mut heap[..]
    };
    nul_terminated[..s.len()].copy_from_slice(s);
    nul_terminated[s.len()] = 0;
    let mut consumed = 0usize;
    let mut erange = 0i32;
    // SAFETY: the buffer is NUL-terminated and outlives the call; the out-pointers
    // point to live locals.
    let value = unsafe { minikv_strtod(nul_terminated.as_ptr().cast(), &mut consumed, &mut erange) };
    Some(Strtod { value, consumed, erange: erange != 0 })
}

/// Redis's `string2d`: the parse behind "value is not a valid float" for scores and
/// increments. No leading space, every byte consumed, no overflow, no NaN.
pub fn parse_double(s: &[u8]) -> Option<f64> {
    if s.is_empty() || s[0].is_ascii_whitespace() || s[0] == 0x0b {
        return None;
    }
    let r = strtod(s)?;
    if r.consumed != s.len() || r.value.is_nan() {
        return None;
    }
    if r.erange && (r.value.is_infinite() || r.value == 0.0) {
        return None;
    }
    Some(r.value)
}

/// A score bound of ZRANGEBYSCORE and friends, parsed like Redis's `zslParseRange`:
/// an optional `(` for an exclusive bound, then `strtod` with every byte consumed
/// and no NaN. Unlike `string2d`, leading spaces and overflow are accepted.
pub fn parse_score_bound(s: &[u8]) -> Option<(f64, bool)> {
    let (exclusive, text) = match s.first() {
        Some(b'(') => (true, &s[1..]),
        _ => (false, s),
    };
    let r = strtod(text)?;
    if r.consumed != text.len() || r.value.is_nan() {
        return None;
    }
    Some((r.value, exclusive))
}

/// Formats a double like Redis 7.0's `addReplyDouble`: `inf`, `-inf`, else `%.17g`.
/// Returns the number of bytes written to `out`.
pub fn format_double(v: f64, out: &mut [u8; 64]) -> usize {
    if v.is_infinite() {
        let text: &[u8] = if v > 0.0 { b"inf" } else { b"-inf" };
        out[..text.len()].copy_from_slice(text);
        return text.len();
    }
    // SAFETY: `out` is 64 bytes and "%.17g" of a finite double is at most 24 bytes.
    let n = unsafe { minikv_format_g17(v, out.as_mut_ptr().cast(), out.len()) };
    debug_assert!(n > 0 && (n as usize) < out.len());
    n.clamp(0, 63) as usize
}

pub fn double_to_vec(v: f64) -> Vec<u8> {
    let mut buf = [0u8; 64];
    let n = format_double(v, &mut buf);
    buf[..n].to_vec()
}

/// Why a long double increment failed; each maps to a Redis error message that
/// depends on the command (INCRBYFLOAT and HINCRBYFLOAT word the first one apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatIncrError {
    BaseNotFloat,
    IncrNotFloat,
    NanOrInfinity,
}

/// `base + incr` computed and printed exactly like INCRBYFLOAT in Redis: both parsed
/// with `strtold`, summed in `long double`, printed with `%.17Lf` minus trailing zeros.
/// `base` is `None` for a key that does not exist (0).
pub fn long_double_incr(base: Option<&[u8]>, incr: &[u8]) -> Result<Vec<u8>, FloatIncrError> {
    let mut out = vec![0u8; MAX_FLOAT_TEXT + 32];
    let (base_ptr, base_len) = match base {
        Some(b) => (b.as_ptr(), b.len()),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: pointers and lengths describe live slices; the shim copies inputs into
    // bounded NUL-terminated buffers and writes at most `out.len()` bytes.
    let n = unsafe {
        minikv_ld_incr(base_ptr.cast(), base_len, incr.as_ptr().cast(), incr.len(), out.as_mut_ptr().cast(), out.len())
    };
    match n {
        -1 => Err(FloatIncrError::BaseNotFloat),
        -2 => Err(FloatIncrError::IncrNotFloat),
        n if n < 0 => Err(FloatIncrError::NanOrInfinity),
        n => {
            out.truncate(n as usize);
            Ok(out)
        }
    }
}

/// Formats an integer as Redis stores integer-looking strings.
pub fn i64_to_vec(v: i64) -> Vec<u8> {
    let mut b = itoa::Buffer::new();
    b.format(v).as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_print_like_redis_7_0() {
        assert_eq!(double_to_vec(1.5), b"1.5");
        assert_eq!(double_to_vec(0.1), b"0.10000000000000001");
        assert_eq!(double_to_vec(3.0), b"3");
        assert_eq!(double_to_vec(f64::INFINITY), b"inf");
        assert_eq!(double_to_vec(-1e300), b"-1.0000000000000001e+300");
    }

    #[test]
    fn double_parsing_follows_string2d() {
        assert_eq!(parse_double(b"1.5"), Some(1.5));
        assert_eq!(parse_double(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_double(b"0x10"), Some(16.0));
        for bad in [&b""[..], b" 1", b"1 ", b"nan", b"1e999", b"abc", b"1\0"] {
            assert_eq!(parse_double(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_score_bound(b"(1.5"), Some((1.5, true)));
        assert_eq!(parse_score_bound(b" 2"), Some((2.0, false)));
        assert_eq!(parse_score_bound(b"x"), None);
    }

    #[test]
    fn incrbyfloat_matches_long_double_arithmetic() {
        assert_eq!(long_double_incr(Some(b"10.5"), b"0.1").unwrap(), b"10.6");
        assert_eq!(long_double_incr(Some(b"0.1"), b"0.2").unwrap(), b"0.3");
        assert_eq!(long_double_incr(None, b"5").unwrap(), b"5");
        assert_eq!(long_double_incr(Some(b"-1"), b"1").unwrap(), b"0");
        assert_eq!(long_double_incr(Some(b"5.0e3"), b"2.0e2").unwrap(), b"5200");
        assert_eq!(long_double_incr(Some(b"x"), b"1"), Err(FloatIncrError::BaseNotFloat));
        assert_eq!(long_double_incr(Some(b"1"), b" 1"), Err(FloatIncrError::IncrNotFloat));
        assert_eq!(long_double_incr(Some(b"1"), b"inf"), Err(FloatIncrError::NanOrInfinity));
    }
}
