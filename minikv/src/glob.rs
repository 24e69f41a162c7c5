//! Glob-style pattern matching, with the exact rules of Redis's `stringmatchlen`.
//!
//! Used by KEYS, SCAN/HSCAN/SSCAN/ZSCAN MATCH, PSUBSCRIBE and CONFIG GET.
//! `*` any run, `?` one byte, `[abc]`, `[^a-z]` classes, `\x` escapes. Binary safe.
//!
//! Redis bounds the recursion that `*` causes (a pattern of many stars against a long
//! string is exponential); we keep the same guard: past a nesting limit the match
//! fails instead of burning CPU.

/// Redis 7.0 stops after this many nested `*` expansions.
const MAX_NESTING: usize = 1000;

pub fn matches(pattern: &[u8], string: &[u8], nocase: bool) -> bool {
    let mut skip_longer = false;
    match_impl(pattern, string, nocase, &mut skip_longer, 0)
}

fn eq(a: u8, b: u8, nocase: bool) -> bool {
    if nocase {
        a.eq_ignore_ascii_case(&b)
    } else {
        a == b
    }
}

fn match_impl(mut p: &[u8], mut s: &[u8], nocase: bool, skip_longer: &mut bool, nesting: usize) -> bool {
    if nesting > MAX_NESTING {
        return false;
    }
    while !p.is_empty() && !s.is_empty() {
        match p[0] {
            b'*' => {
                while p.len() > 1 && p[1] == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                while !s.is_empty() {
                    if match_impl(&p[1..], s, nocase, skip_longer, nesting + 1) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s = &s[1..];
                }
                *skip_longer = true;
                return false;
            }
            b'?' => {
                s = &s[1..];
            }
            b'[' => {
                p = &p[1..];
                let not = p.first() == Some(&b'^');
                if not {
                    p = &p[1..];
                }
                let mut matched = false;
                loop {
                    if p.is_empty() {
                        // Unterminated class: Redis steps back so the loop's `p++` lands
                        // on the end.
                        break;
                    }
                    if p[0] == b'\\' && p.len() >= 2 {
                        p = &p[1..];
                        if eq(p[0], s[0], nocase) {
                            matched = true;
                        }
                    } else if p[0] == b']' {
                        break;
                    } else if p.len() >= 3 && p[1] == b'-' {
                        let (mut start, mut end) = (p[0], p[2]);
                        let mut c = s[0];
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        if nocase {
                            start = start.to_ascii_lowercase();
                            end = end.to_ascii_lowercase();
                            c = c.to_ascii_lowercase();
                        }
                        p = &p[2..];
                        if c >= start && c <= end {
                            matched = true;
                        }
                    } else if eq(p[0], s[0], nocase) {
                        matched = true;
                    }
                    p = &p[1..];
                }
                let matched = if not { !matched } else { matched };
                if !matched {
                    return false;
                }
                s = &s[1..];
                if p.is_empty() {
                    // Unterminated class at the end of the pattern.
                    return s.is_empty();
                }
            }
            b'\\' if p.len() >= 2 => {
                p = &p[1..];
                if !eq(p[0], s[0], nocase) {
                    return false;
                }
                s = &s[1..];
            }
            c => {
                if !eq(c, s[0], nocase) {
                    return false;
                }
                s = &s[1..];
            }
        }
        p = &p[1..];
        if s.is_empty() {
            while p.first() == Some(&b'*') {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

#[cfg(test)]
mod tests {
    use super::matches;
    use proptest::prelude::*;

    #[test]
    fn redis_examples() {
        assert!(matches(b"h?llo", b"hello", false));
        assert!(matches(b"h*llo", b"heeeello", false));
        assert!(matches(b"h[ae]llo", b"hallo", false));
        assert!(!matches(b"h[^e]llo", b"hello", false));
        assert!(matches(b"h[a-b]llo", b"hbllo", false));
        // Like stringmatchlen, a lone `*` does not match the empty string; KEYS and
        // SCAN special-case the pattern `*` before calling it, as Redis does.
        assert!(!matches(b"*", b"", false));
        assert!(matches(b"a*", b"a", false));
        assert!(matches(b"a\\*b", b"a*b", false));
        assert!(!matches(b"a\\*b", b"axb", false));
        assert!(matches(b"user:*", b"user:1", false));
        assert!(!matches(b"user:*", b"use", false));
        assert!(matches(b"MAXMEM*", b"maxmemory", true));
        assert!(!matches(b"a*b", b"acd", false));
        assert!(matches(b"*a*a*a*a*b", b"aaaaaaaaaaaaaab", false));
    }

    proptest! {
        #[test]
        fn never_panics(p in prop::collection::vec(prop::sample::select(vec![b'*', b'?', b'[', b']', b'^', b'-', b'\\', b'a', b'b']), 0..16),
                        s in prop::collection::vec(prop::sample::select(vec![b'a', b'b', b'-', b']']), 0..16)) {
            let _ = matches(&p, &s, false);
            let _ = matches(&p, &s, true);
        }

        #[test]
        fn literal_patterns_match_only_themselves(s in "[a-z]{0,12}", t in "[a-z]{0,12}") {
            prop_assert_eq!(matches(s.as_bytes(), t.as_bytes(), false), s == t);
            let star = format!("{s}*");
            let expected = t.starts_with(&s) && !t.is_empty();
            prop_assert_eq!(matches(star.as_bytes(), t.as_bytes(), false), expected);
        }
    }
}
