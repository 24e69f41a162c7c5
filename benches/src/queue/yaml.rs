//! The two shapes of YAML beanstalkd answers `stats*` and `list-tubes*` with, and
//! nothing more: a dictionary of scalars and a list of names.
//!
//! ```text
//! ---                         ---
//! current-jobs-ready: 3       - default
//! version: "1.12"             - emails
//! last-error: "said \"no\""
//! ```
//!
//! beanstalkd writes these with `printf`, one entry a line, so a line parser is the
//! honest reader: a key, `": "`, then either a double-quoted string (miniqueue's
//! `last-error` and `dead-reason`, beanstalkd's `version`, with `\"` and `\\`
//! escaped) or the rest of the line as it is (`os: #1 SMP ...` is one value, not a
//! comment, because that is what the server meant). Left out: nesting, flow style,
//! multi-line scalars, anchors; beanstalkd sends none of them, so meeting one is an
//! error, not something to guess at.

use std::fmt;

/// Why a stats body could not be read, with the line (1-based) it failed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub reason: &'static str,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} of the YAML reply: {}", self.line, self.reason)
    }
}

impl std::error::Error for YamlError {}

/// A stats dictionary, in the order the server sent it (which is the order people
/// expect to read it in: `mini queue stats` prints it back as it came).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dict {
    entries: Vec<(String, String)>,
}

impl Dict {
    /// The value of `key`, unquoted.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of `key` as a non-negative integer: most stats are counters.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }

    /// Whether `key` is `true` (miniqueue's `dead`, beanstalkd's `draining`).
    pub fn get_bool(&self, key: &str) -> bool {
        self.get(key) == Some("true")
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The lines of a YAML document after its `---` header, numbered from 1, without the
/// blank lines beanstalkd ends the body with.
fn body_lines(body: &[u8]) -> Result<impl Iterator<Item = (usize, &str)>, YamlError> {
    let text = std::str::from_utf8(body).map_err(|_| YamlError { line: 0, reason: "not UTF-8" })?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).enumerate();
    match lines.next() {
        Some((_, "---")) => {}
        _ => return Err(YamlError { line: 1, reason: "expected the document header `---`" }),
    }
    Ok(lines.map(|(i, l)| (i + 1, l)).filter(|(_, l)| !l.is_empty()))
}

/// Parses a `stats`, `stats-tube` or `stats-job` body.
pub fn parse_dict(body: &[u8]) -> Result<Dict, YamlError> {
    let mut entries = Vec::new();
    for (line, text) in body_lines(body)? {
        let (key, value) = text.split_once(':').ok_or(YamlError { line, reason: "expected `key: value`" })?;
        if key.is_empty() || key.starts_with([' ', '-', '"']) {
            return Err(YamlError { line, reason: "expected a plain key" });
        }
        let value = match value.strip_prefix(' ') {
            Some(v) => v,
            None if value.is_empty() => value,
            None => return Err(YamlError { line, reason: "expected a space after the colon" }),
        };
        let value = if value.starts_with('"') {
            unquote(value).ok_or(YamlError { line, reason: "bad quoted string" })?
        } else {
            value.to_string()
        };
        entries.push((key.to_string(), value));
    }
    Ok(Dict { entries })
}

/// Parses a `list-tubes` or `list-tubes-watched` body.
pub fn parse_list(body: &[u8]) -> Result<Vec<String>, YamlError> {
    body_lines(body)?
        .map(|(line, text)| match text.strip_prefix("- ") {
            Some(item) if !item.is_empty() => Ok(item.to_string()),
            _ => Err(YamlError { line, reason: "expected `- item`" }),
        })
        .collect()
}

/// The contents of a double-quoted scalar (`"a \"b\" \\ c"`), or `None` when it is not
/// one whole quoted string. Only the escapes miniqueue writes are understood, plus
/// `\n`, `\r` and `\t`, which a server would need to keep a value on its line.
fn unquote(quoted: &str) -> Option<String> {
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(match chars.next()? {
                '"' => '"',
                '\\' => '\\',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                _ => return None,
            }),
            // An unescaped quote inside means the value ended early: not one scalar.
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// `value` as a YAML double-quoted scalar, the way miniqueue writes `last-error`: the
/// inverse of [`unquote`], for tests and for anyone printing a value back.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_a_beanstalkd_stats_body() {
        let body = b"---\ncurrent-jobs-ready: 3\nversion: \"1.12\"\nos: #1 SMP PREEMPT_DYNAMIC @0\ndraining: false\n\n";
        let dict = parse_dict(body).expect("parses");
        assert_eq!(dict.get_u64("current-jobs-ready"), Some(3));
        assert_eq!(dict.get("version"), Some("1.12"));
        assert_eq!(dict.get("os"), Some("#1 SMP PREEMPT_DYNAMIC @0"), "a # is part of the value");
        assert!(!dict.get_bool("draining"));
        assert_eq!(dict.len(), 4);
        assert_eq!(dict.iter().next(), Some(("current-jobs-ready", "3")), "in the server's order");
    }

    #[test]
    fn reads_miniqueues_quoted_extras() {
        let body = b"---\nid: 7\nlast-error: \"said \\\"no\\\" \\\\ twice\"\ndead: true\n";
        let dict = parse_dict(body).expect("parses");
        assert_eq!(dict.get("last-error"), Some("said \"no\" \\ twice"));
        assert!(dict.get_bool("dead"));
    }

    #[test]
    fn reads_a_tube_list() {
        assert_eq!(parse_list(b"---\n- default\n- foo\n").expect("parses"), ["default", "foo"]);
        assert_eq!(parse_list(b"---\n").expect("parses"), Vec::<String>::new());
    }

    #[test]
    fn refuses_what_beanstalkd_never_sends() {
        assert_eq!(parse_dict(b"id: 1\n").map_err(|e| e.line), Err(1), "no header");
        assert_eq!(parse_dict(b"---\nid 1\n").map_err(|e| e.line), Err(2));
        assert_eq!(parse_dict(b"---\nid:1\n").map_err(|e| e.reason), Err("expected a space after the colon"));
        assert!(parse_dict(b"---\nlast-error: \"open\n").is_err());
        assert!(parse_dict(b"---\nlast-error: \"a\"b\"\n").is_err());
        assert!(parse_dict(b"---\nx: \"\\q\"\n").is_err(), "an unknown escape");
        assert!(parse_list(b"---\nfoo\n").is_err());
        assert!(parse_dict(b"---\n\xff: 1\n").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_dict(&body);
            let _ = parse_list(&body);
        }

        #[test]
        fn a_quoted_value_reads_back(value in "\\PC{0,40}") {
            let body = format!("---\nlast-error: {}\n", quote(&value));
            let dict = parse_dict(body.as_bytes()).expect("a quoted value parses");
            prop_assert_eq!(dict.get("last-error"), Some(value.as_str()));
        }

        #[test]
        fn dicts_round_trip(entries in proptest::collection::vec(("[a-z][a-z-]{0,15}", "[ -~]{0,30}"), 0..10)) {
            let mut body = String::from("---\n");
            for (k, v) in &entries {
                body.push_str(&format!("{k}: {}\n", quote(v)));
            }
            body.push('\n');
            let dict = parse_dict(body.as_bytes()).expect("parses");
            let read: Vec<(String, String)> = dict.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            prop_assert_eq!(read, entries);
        }
    }
}
