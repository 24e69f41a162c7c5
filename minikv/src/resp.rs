//! RESP, the Redis serialization protocol: parsing requests and encoding replies.
//!
//! Requests arrive in two forms, and we accept both exactly the way redis-server does:
//!
//! - **multibulk**: `*<argc>\r\n` followed by `argc` bulk strings `$<len>\r\n<bytes>\r\n`.
//!   Every real client sends this.
//! - **inline**: one line of space-separated words, with the same quoting rules as
//!   `sdssplitargs` (`"..."` with `\x41`-style escapes, `'...'`). Telnet users and
//!   redis-benchmark's very first test (`PING_INLINE`) send this.
//!
//! The parser never copies a multibulk argument: it records byte ranges into the
//! connection's read buffer ([`ArgBuf`]) and the command reads them through [`Args`].
//! It is *resumable*: a large command that arrives over many reads is not re-scanned
//! from its first byte on every read.
//!
//! Replies are encoded by [`Reply`], which knows the connection's protocol version. A
//! command writes "a map of two entries" once; RESP3 clients get `%2`, RESP2 clients get
//! the flat `*4` array Redis sends them. The same goes for sets, doubles, booleans, nulls
//! and push messages.
//!
//! Left out: parsing RESP3 *requests* beyond the multibulk form (Redis does not accept
//! them either) and the attribute type `|`, which Redis never sends to normal clients.

use std::ops::Range;

/// Redis's `PROTO_INLINE_MAX_SIZE`: the longest inline request, and the longest
/// `*<n>` / `$<n>` header line, before the request is rejected as a protocol error.
pub const MAX_INLINE_LEN: usize = 64 * 1024;

/// Redis's limits for clients that have not authenticated yet, so that an
/// unauthenticated peer cannot make the server buffer a lot of memory.
pub const UNAUTHENTICATED_MAX_ARGS: usize = 10;
pub const UNAUTHENTICATED_MAX_BULK: usize = 16 * 1024;

/// The limits a request is checked against. They come from the configuration
/// (`proto-max-bulk-len`, `proto-max-multibulk-len`) and change at run time.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `proto-max-bulk-len`: the largest single argument (Redis default 512 MiB).
    pub max_bulk_len: usize,
    /// The largest `argc` of a multibulk request (Redis default `INT_MAX`).
    pub max_multibulk_len: usize,
    /// True until the client authenticates when `requirepass` is set; enables the
    /// tighter unauthenticated limits above.
    pub unauthenticated: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bulk_len: 512 * 1024 * 1024, max_multibulk_len: i32::MAX as usize, unauthenticated: false }
    }
}

/// A protocol violation. The connection answers `-ERR Protocol error: <msg>` and closes,
/// because after a framing error the stream cannot be resynchronised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(msg: impl Into<String>) -> Self {
        ProtocolError(msg.into())
    }
}

/// What one call to [`ArgBuf::parse`] found at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole command is in [`ArgBuf`]; `consumed` bytes of input belong to it.
    Command { consumed: usize },
    /// Input that carries no command (an empty inline line, `*0`, `*-1`): skip it.
    Nothing { consumed: usize },
    /// More bytes are needed. `at_least` is the total frame size when it is known, so
    /// the caller can grow its buffer once instead of doubling many times.
    Incomplete { at_least: Option<usize> },
}

/// Where the arguments of the last parsed command live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Ranges index the caller's input buffer (multibulk: zero copy).
    Input,
    /// Ranges index `ArgBuf::inline` (inline requests are unquoted into it).
    Inline,
}

/// The parsed arguments of one request, plus the state of a partly received
/// multibulk request. One per connection, reused for every command so that the
/// steady state allocates nothing.
#[derive(Debug)]
pub struct ArgBuf {
    spans: Vec<Range<usize>>,
    inline: Vec<u8>,
    source: Source,
    /// Progress through a multibulk request that is not complete yet: the number of
    /// arguments announced and the offset (from the start of the request) where the
    /// next `$` header is expected. `None` when no request is in progress.
    partial: Option<(usize, usize)>,
}

impl Default for ArgBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl ArgBuf {
    pub fn new() -> Self {
        ArgBuf { spans: Vec::with_capacity(8), inline: Vec::new(), source: Source::Input, partial: None }
    }

    /// Parses one request from the front of `input`.
    ///
    /// `input` must start at the first byte of a request; after `Incomplete` the caller
    /// calls again with the same request at the front and more bytes appended.
    pub fn parse(&mut self, input: &[u8], limits: &Limits) -> Result<Parsed, ProtocolError> {
        if input.is_empty() {
            return Ok(Parsed::Incomplete { at_least: None });
        }
        if input[0] == b'*' {
            self.parse_multibulk(input, limits)
        } else {
            self.partial = None;
            self.parse_inline(input)
        }
    }

    /// The arguments of the command found by the last `Parsed::Command`.
    /// `input` must be the same buffer that was passed to `parse`.
    pub fn args<'a>(&'a self, input: &'a [u8]) -> Args<'a> {
        let data = match self.source {
            Source::Input => input,
            Source::Inline => &self.inline[..],
        };
        Args { data, spans: &self.spans }
    }

    fn parse_multibulk(&mut self, input: &[u8], limits: &Limits) -> Result<Parsed, ProtocolError> {
        let (argc, mut pos) = match self.partial {
            Some(progress) => progress,
            None => {
                let Some(line_end) = find_crlf(input, 1) else {
                    if input.len() > MAX_INLINE_LEN {
                        return Err(ProtocolError::new("too big mbulk count string"));
                    }
                    return Ok(Parsed::Incomplete { at_least: None });
                };
                let count =
                    parse_len(&input[1..line_end]).ok_or_else(|| ProtocolError::new("invalid multibulk length"))?;
                if count > i32::MAX as i64 {
                    return Err(ProtocolError::new("invalid multibulk length"));
                }
                let after_header = line_end + 2;
                if count <= 0 {
                    return Ok(Parsed::Nothing { consumed: after_header });
                }
                let count = count as usize;
                if limits.unauthenticated && count > UNAUTHENTICATED_MAX_ARGS {
                    return Err(ProtocolError::new("unauthenticated multibulk length"));
                }
                if count > limits.max_multibulk_len {
                    return Err(ProtocolError::new("invalid multibulk length"));
                }
                self.spans.clear();
                self.source = Source::Input;
                (count, after_header)
            }
        };
        while self.spans.len() < argc {
            if pos >= input.len() {
                self.partial = Some((argc, pos));
                return Ok(Parsed::Incomplete { at_least: None });
            }
            if input[pos] != b'$' {
                self.partial = None;
                return Err(ProtocolError(format!("expected '$', got '{}'", input[pos] as char)));
            }
            let Some(line_end) = find_crlf(input, pos + 1) else {
                if input.len() - pos > MAX_INLINE_LEN {
                    self.partial = None;
                    return Err(ProtocolError::new("too big bulk count string"));
                }
                self.partial = Some((argc, pos));
                return Ok(Parsed::Incomplete { at_least: None });
            };
            let len = match parse_len(&input[pos + 1..line_end]) {
                Some(len) if len >= 0 && (len as u64) <= limits.max_bulk_len as u64 => len as usize,
                _ => {
                    self.partial = None;
                    return Err(ProtocolError::new("invalid bulk length"));
                }
            };
            if limits.unauthenticated && len > UNAUTHENTICATED_MAX_BULK {
                self.partial = None;
                return Err(ProtocolError::new("unauthenticated bulk length"));
            }
            let start = line_end + 2;
            // Like Redis, the two bytes after the payload are skipped, not checked.
            let end = start + len;
            if end + 2 > input.len() {
                self.partial = Some((argc, pos));
                return Ok(Parsed::Incomplete { at_least: Some(end + 2) });
            }
            self.spans.push(start..end);
            pos = end + 2;
        }
        self.partial = None;
        debug_assert_eq!(self.spans.len(), argc);
        Ok(Parsed::Command { consumed: pos })
    }

    fn parse_inline(&mut self, input: &[u8]) -> Result<Parsed, ProtocolError> {
        let Some(newline) = input.iter().position(|&b| b == b'\n') else {
            if input.len() > MAX_INLINE_LEN {
                return Err(ProtocolError::new("too big inline request"));
            }
            return Ok(Parsed::Incomplete { at_least: None });
        };
        let mut line = &input[..newline];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        self.spans.clear();
        self.inline.clear();
        self.source = Source::Inline;
        split_args(line, &mut self.inline, &mut self.spans)
            .map_err(|UnbalancedQuotes| ProtocolError::new("unbalanced quotes in request"))?;
        let consumed = newline + 1;
        if self.spans.is_empty() {
            Ok(Parsed::Nothing { consumed })
        } else {
            Ok(Parsed::Command { consumed })
        }
    }
}

/// A borrowed view of a command's arguments; `args.get(0)` is the command name.
#[derive(Clone, Copy, Debug)]
pub struct Args<'a> {
    data: &'a [u8],
    spans: &'a [Range<usize>],
}

impl<'a> Args<'a> {
    pub fn new(data: &'a [u8], spans: &'a [Range<usize>]) -> Self {
        Args { data, spans }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Argument `i`. Callers check arity first; an out-of-range index is a bug in
    /// the command, not bad input, so it panics in debug builds and yields `b""` else.
    #[inline]
    pub fn get(&self, i: usize) -> &'a [u8] {
        debug_assert!(i < self.spans.len(), "argument {i} of {}", self.spans.len());
        match self.spans.get(i) {
            Some(span) => &self.data[span.clone()],
            None => b"",
        }
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let data = self.data;
        self.spans.iter().map(move |s| &data[s.clone()])
    }

    /// Arguments `from..` (for example the keys of `DEL k1 k2 ...`).
    pub fn slice_from(&self, from: usize) -> Args<'a> {
        Args { data: self.data, spans: &self.spans[from.min(self.spans.len())..] }
    }
}

/// Owned arguments, for commands that outlive the read buffer: commands queued by
/// `MULTI`, and blocking commands that wait.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnedArgs {
    data: Vec<u8>,
    spans: Vec<Range<usize>>,
}

impl OwnedArgs {
    pub fn from_args(args: &Args<'_>) -> Self {
        let mut owned = OwnedArgs::default();
        for a in args.iter() {
            owned.push(a);
        }
        owned
    }

    pub fn from_slices<'s>(parts: impl IntoIterator<Item = &'s [u8]>) -> Self {
        let mut owned = OwnedArgs::default();
        for a in parts {
            owned.push(a);
        }
        owned
    }

    pub fn push(&mut self, arg: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(arg);
        self.spans.push(start..self.data.len());
    }

    pub fn as_args(&self) -> Args<'_> {
        Args { data: &self.data, spans: &self.spans }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Appends this command in RESP multibulk form, as it is stored in the AOF.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        encode_command(self.as_args().iter(), out);
    }
}

/// Encodes a command as a RESP multibulk request.
pub fn encode_command<'a>(parts: impl ExactSizeIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    out.push(b'*');
    push_int(out, parts.len() as i64);
    out.extend_from_slice(b"\r\n");
    for p in parts {
        out.push(b'$');
        push_int(out, p.len() as i64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    // Redis looks for '\r' and then requires the '\n' to be present.
    let rel = buf.get(from..)?.iter().position(|&b| b == b'\r')?;
    let at = from + rel;
    if at + 1 < buf.len() {
        Some(at)
    } else {
        None
    }
}

/// Parses a length the way Redis's `string2ll` does: optional `-`, decimal digits,
/// no `+`, no leading zeros, no spaces, must fit in an i64.
fn parse_len(s: &[u8]) -> Option<i64> {
    parse_i64_strict(s)
}

/// Redis's `string2ll`: the strict integer syntax used for lengths and for
/// "value is not an integer" checks on arguments.
pub fn parse_i64_strict(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s[0] {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !(b'1'..=b'9').contains(&digits[0]) {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((d - b'0') as u64)?;
    }
    if negative {
        if v > i64::MAX as u64 + 1 {
            None
        } else {
            Some((v as i64).wrapping_neg())
        }
    } else if v > i64::MAX as u64 {
        None
    } else {
        Some(v as i64)
    }
}

/// An inline line whose quotes do not balance (or a closing quote not followed by a
/// space): the one way [`split_args`] fails, as `sdssplitargs` returns NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnbalancedQuotes;

/// Splits an inline request the way Redis's `sdssplitargs` does. Unquoted bytes are
/// copied into `out` and each argument's range is pushed to `spans`.
/// Errors (unbalanced quotes, a closing quote not followed by a space) return
/// [`UnbalancedQuotes`].
pub fn split_args(line: &[u8], out: &mut Vec<u8>, spans: &mut Vec<Range<usize>>) -> Result<(), UnbalancedQuotes> {
    // sdssplitargs works on a C string: a NUL byte ends the line (and an open quote
    // before it is then unterminated).
    let line = &line[..line.iter().position(|&b| b == 0).unwrap_or(line.len())];
    let is_space = |b: u8| matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c);
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i >= line.len() {
            return Ok(());
        }
        let start = out.len();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            if in_double {
                if i >= line.len() {
                    return Err(UnbalancedQuotes);
                }
                let c = line[i];
                if c == b'\\'
                    && i + 3 < line.len()
                    && line[i + 1] == b'x'
                    && line[i + 2].is_ascii_hexdigit()
                    && line[i + 3].is_ascii_hexdigit()
                {
                    out.push(hex_value(line[i + 2]) * 16 + hex_value(line[i + 3]));
                    i += 3;
                } else if c == b'\\' && i + 1 < line.len() {
                    i += 1;
                    out.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    // The closing quote must be followed by a space or the end.
                    if i + 1 < line.len() && !is_space(line[i + 1]) {
                        return Err(UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                } else {
                    out.push(c);
                }
            } else if in_single {
                if i >= line.len() {
                    return Err(UnbalancedQuotes);
                }
                let c = line[i];
                if c == b'\\' && i + 1 < line.len() && line[i + 1] == b'\'' {
                    i += 1;
                    out.push(b'\'');
                } else if c == b'\'' {
                    if i + 1 < line.len() && !is_space(line[i + 1]) {
                        return Err(UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                } else {
                    out.push(c);
                }
            } else {
                if i >= line.len() {
                    break;
                }
                match line[i] {
                    b' ' | b'\n' | b'\r' | b'\t' => break,
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    c => out.push(c),
                }
            }
            i += 1;
        }
        spans.push(start..out.len());
    }
}

fn hex_value(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

#[inline]
pub fn push_int(out: &mut Vec<u8>, v: i64) {
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(v).as_bytes());
}

/// The protocol version a connection speaks; `HELLO 3` switches to RESP3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Resp2,
    Resp3,
}

/// A reply encoder over the connection's output buffer.
///
/// Every method appends one RESP value. Aggregates are written header first
/// (`array(n)`) and then their `n` elements; the encoder does not check the count,
/// the commands do (and the RESP round-trip tests check the commands).
pub struct Reply<'a> {
    pub buf: &'a mut Vec<u8>,
    pub proto: Protocol,
}

impl<'a> Reply<'a> {
    pub fn new(buf: &'a mut Vec<u8>, proto: Protocol) -> Self {
        Reply { buf, proto }
    }

    #[inline]
    pub fn resp3(&self) -> bool {
        self.proto == Protocol::Resp3
    }

    #[inline]
    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    /// `+<s>`; `s` must not contain CR or LF.
    pub fn simple(&mut self, s: &str) {
        debug_assert!(!s.contains(['\r', '\n']));
        self.buf.push(b'+');
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// An error reply. `msg` includes the error code, e.g. `"ERR syntax error"`.
    /// Like Redis's `addReplyErrorFormat`, CR and LF at either end are trimmed and the
    /// ones inside become spaces, so the reply stays one line.
    pub fn error(&mut self, msg: &str) {
        let msg = msg.trim_matches(|c| c == '\r' || c == '\n');
        self.buf.push(b'-');
        for &b in msg.as_bytes() {
            self.buf.push(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.buf.extend_from_slice(b"\r\n");
    }

    /// [`Reply::error`] for a message that may hold bytes that are not UTF-8 (an
    /// argument quoted in the message), sent as they are.
    pub fn error_bytes(&mut self, msg: &[u8]) {
        let start = msg.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(msg.len());
        let end = msg.iter().rposition(|&b| b != b'\r' && b != b'\n').map_or(start, |i| i + 1);
        self.buf.push(b'-');
        for &b in &msg[start..end] {
            self.buf.push(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.buf.extend_from_slice(b"\r\n");
    }

    #[inline]
    pub fn int(&mut self, v: i64) {
        self.buf.push(b':');
        push_int(self.buf, v);
        self.buf.extend_from_slice(b"\r\n");
    }

    #[inline]
    pub fn bulk(&mut self, data: &[u8]) {
        self.buf.push(b'$');
        push_int(self.buf, data.len() as i64);
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// A bulk string of an integer's decimal form (how Redis replies with an
    /// integer-encoded string value).
    pub fn bulk_int(&mut self, v: i64) {
        let mut b = itoa::Buffer::new();
        self.bulk(b.format(v).as_bytes());
    }

    /// The "no value" reply of commands that return a bulk string: `$-1` or `_`.
    #[inline]
    pub fn null_bulk(&mut self) {
        self.buf.extend_from_slice(if self.resp3() { b"_\r\n" } else { b"$-1\r\n" });
    }

    /// The "no value" reply of commands that return an array: `*-1` or `_`.
    pub fn null_array(&mut self) {
        self.buf.extend_from_slice(if self.resp3() { b"_\r\n" } else { b"*-1\r\n" });
    }

    #[inline]
    pub fn array(&mut self, n: usize) {
        self.header(b'*', n);
    }

    /// A map of `n` pairs: `%n` in RESP3, a flat array of `2n` elements in RESP2.
    pub fn map(&mut self, n: usize) {
        if self.resp3() {
            self.header(b'%', n)
        } else {
            self.header(b'*', n * 2)
        }
    }

    /// A set of `n` elements: `~n` in RESP3, an array in RESP2.
    pub fn set(&mut self, n: usize) {
        if self.resp3() {
            self.header(b'~', n)
        } else {
            self.header(b'*', n)
        }
    }

    /// An out-of-band push message (pub/sub): `>n` in RESP3, an array in RESP2.
    pub fn push(&mut self, n: usize) {
        if self.resp3() {
            self.header(b'>', n)
        } else {
            self.header(b'*', n)
        }
    }

    /// A double, formatted like Redis 7.0 (`%.17g`, `inf`, `-inf`): a RESP3 double,
    /// or a bulk string in RESP2.
    pub fn double(&mut self, v: f64) {
        let mut text = [0u8; 64];
        let len = crate::numeric::format_double(v, &mut text);
        if self.resp3() {
            self.buf.push(b',');
            self.buf.extend_from_slice(&text[..len]);
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(&text[..len]);
        }
    }

    /// A boolean: `#t`/`#f` in RESP3, `:1`/`:0` in RESP2.
    pub fn boolean(&mut self, v: bool) {
        if self.resp3() {
            self.buf.extend_from_slice(if v { b"#t\r\n" } else { b"#f\r\n" });
        } else {
            self.int(v as i64);
        }
    }

    /// Verbatim text (INFO, CLIENT LIST): `=len\r\ntxt:...` in RESP3, a bulk string
    /// in RESP2.
    pub fn verbatim(&mut self, text: &[u8]) {
        if self.resp3() {
            self.buf.push(b'=');
            push_int(self.buf, text.len() as i64 + 4);
            self.buf.extend_from_slice(b"\r\ntxt:");
            self.buf.extend_from_slice(text);
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(text);
        }
    }

    #[inline]
    fn header(&mut self, tag: u8, n: usize) {
        self.buf.push(tag);
        push_int(self.buf, n as i64);
        self.buf.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut argbuf = ArgBuf::new();
        let limits = Limits::default();
        let mut pos = 0;
        let mut commands = Vec::new();
        loop {
            match argbuf.parse(&input[pos..], &limits)? {
                Parsed::Command { consumed } => {
                    let args = argbuf.args(&input[pos..]);
                    commands.push(args.iter().map(|a| a.to_vec()).collect());
                    pos += consumed;
                }
                Parsed::Nothing { consumed } => pos += consumed,
                Parsed::Incomplete { .. } => return Ok(commands),
            }
        }
    }

    #[test]
    fn multibulk_and_inline() {
        let cmds = parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\nset a \"b c\"\r\n").unwrap();
        assert_eq!(
            cmds,
            vec![
                vec![b"GET".to_vec(), b"k".to_vec()],
                vec![b"PING".to_vec()],
                vec![b"set".to_vec(), b"a".to_vec(), b"b c".to_vec()],
            ]
        );
    }

    #[test]
    fn inline_quoting_matches_sdssplitargs() {
        let mut out = Vec::new();
        let mut spans = Vec::new();
        split_args(br#"a "x\x41\n" 'it\'s' """#, &mut out, &mut spans).unwrap();
        let got: Vec<&[u8]> = spans.iter().map(|s| &out[s.clone()]).collect();
        assert_eq!(got, vec![&b"a"[..], b"xA\n", b"it's", b""]);
        assert!(split_args(br#""unterminated"#, &mut Vec::new(), &mut Vec::new()).is_err());
        assert!(split_args(br#""a"b"#, &mut Vec::new(), &mut Vec::new()).is_err());
    }

    #[test]
    fn a_nul_byte_ends_an_inline_line() {
        // Found by `cargo fuzz run resp_parse`: this used to loop forever pushing empty
        // arguments. Redis stops at the NUL, as its parser works on C strings.
        let cmds = parse_all(b"?\0|\nPING\r\n").unwrap();
        assert_eq!(cmds, vec![vec![b"?".to_vec()], vec![b"PING".to_vec()]]);
        let err = parse_all(b"\"ab\0cd\"\n").unwrap_err();
        assert_eq!(err.to_string(), "Protocol error: unbalanced quotes in request");
    }

    #[test]
    fn protocol_errors_have_redis_messages() {
        let err = |input: &[u8]| parse_all(input).unwrap_err().to_string();
        assert_eq!(err(b"*x\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(err(b"*1\r\n+a\r\n"), "Protocol error: expected '$', got '+'");
        assert_eq!(err(b"*1\r\n$-5\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(err(b"\"abc\r\n"), "Protocol error: unbalanced quotes in request");
        let big = vec![b'a'; MAX_INLINE_LEN + 1];
        assert_eq!(err(&big), "Protocol error: too big inline request");
    }

    #[test]
    fn resumes_a_command_split_across_reads() {
        let full = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        let limits = Limits::default();
        let mut argbuf = ArgBuf::new();
        for cut in 0..full.len() {
            assert!(matches!(argbuf.parse(&full[..cut], &limits).unwrap(), Parsed::Incomplete { .. }));
        }
        assert_eq!(argbuf.parse(full, &limits).unwrap(), Parsed::Command { consumed: full.len() });
        let args: Vec<&[u8]> = argbuf.args(full).iter().collect();
        assert_eq!(args, vec![&b"SET"[..], b"key", b"value"]);
    }

    #[test]
    fn strict_integers() {
        assert_eq!(parse_i64_strict(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64_strict(b"9223372036854775807"), Some(i64::MAX));
        for bad in [&b"9223372036854775808"[..], b"01", b"+1", b" 1", b"-", b"", b"-0", b"1a"] {
            assert_eq!(parse_i64_strict(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    fn encode(cmd: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_command(cmd.iter().map(|a| &a[..]), &mut out);
        out
    }

    proptest! {
        #[test]
        fn multibulk_round_trips(cmds in prop::collection::vec(
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6), 1..8)) {
            let mut wire = Vec::new();
            for c in &cmds { wire.extend(encode(c)); }
            prop_assert_eq!(parse_all(&wire).unwrap(), cmds);
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_all(&input);
        }

        #[test]
        fn arbitrary_bytes_after_a_star_never_panic(input in prop::collection::vec(
            prop::sample::select(vec![b'*', b'$', b'\r', b'\n', b'1', b'0', b'-', b'3', b'a', b'"', b' ']), 0..256)) {
            let _ = parse_all(&input);
        }

        #[test]
        fn any_split_point_gives_the_same_commands(cmds in prop::collection::vec(
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 1..4), 1..4), cut in 0usize..200) {
            let mut wire = Vec::new();
            for c in &cmds { wire.extend(encode(c)); }
            let cut = cut.min(wire.len());
            let limits = Limits::default();
            let mut argbuf = ArgBuf::new();
            // Feed a prefix first; the parser must ask for more or parse whole commands only.
            let mut got = Vec::new();
            let mut pos = 0;
            for end in [cut, wire.len()] {
                loop {
                    match argbuf.parse(&wire[pos..end], &limits).unwrap() {
                        Parsed::Command { consumed } => {
                            got.push(argbuf.args(&wire[pos..end]).iter().map(|a| a.to_vec()).collect::<Vec<_>>());
                            pos += consumed;
                        }
                        Parsed::Nothing { consumed } => pos += consumed,
                        Parsed::Incomplete { .. } => break,
                    }
                }
            }
            prop_assert_eq!(got, cmds);
        }
    }
}
