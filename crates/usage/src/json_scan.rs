//! An incremental JSON scanner that finds the few values a bill needs without building the
//! document.
//!
//! Bodies can be many megabytes (an image response carries base64 images; a Responses stream's
//! `response.completed` repeats the whole answer) while the usage is a few hundred bytes somewhere
//! inside. The scanner tokenizes the bytes as they arrive, keeps only the path from the root to
//! the current value (container kinds and which wanted paths are still possible), and copies the
//! bytes of a wanted value into a small capture buffer. Memory is fixed: [`MAX_DEPTH`] nesting
//! levels, a key of [`KEY_CAP`] bytes, a capture of [`CAPTURE_CAP`] bytes. Strings are skipped with
//! `memchr`, so text-heavy bodies cost little.
//!
//! The tokenizer is lenient: it does not validate numbers or literals, only tracks structure. A
//! byte that cannot occur where it appears stops the scan (`broken`); what was captured before
//! stays valid.

/// One step of a wanted path: an object key, or any element of an array.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Seg {
    Key(&'static str),
    Index,
}

/// A wanted value: its path from the root, an id the caller chose, and whether its bytes are
/// needed (`copy`) or only the fact that it exists.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Path {
    pub id: u8,
    pub segs: &'static [Seg],
    pub copy: bool,
}

/// The wanted paths of one body or event; at most 32.
pub(crate) type Spec = [Path];

/// What the scanner hands over for a wanted value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Captured<'a> {
    /// The value's JSON text, complete.
    Value(&'a [u8]),
    /// The value was longer than [`CAPTURE_CAP`]; it exists but its text was not kept.
    TooBig,
    /// A `copy: false` path: the value exists (reported when it starts).
    Present,
}

pub(crate) const MAX_DEPTH: usize = 256;
const TRACKED_DEPTH: usize = 16;
pub(crate) const KEY_CAP: usize = 32;
pub(crate) const CAPTURE_CAP: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting a value.
    Value,
    /// After `[`: a value or `]`.
    ArrayFirst,
    /// After `{`: a key or `}`.
    ObjectFirst,
    /// After `,` in an object: a key.
    Key,
    InKey {
        escape: bool,
    },
    Colon,
    InString {
        escape: bool,
    },
    Literal,
    /// After a value: `,`, a closing bracket, or the end.
    After,
    Done,
    Broken,
}

#[derive(Debug)]
pub(crate) struct JsonScan {
    spec: &'static Spec,
    state: State,
    depth: usize,
    /// Bit `d` set: the container at depth `d + 1` is an array.
    arrays: [u64; MAX_DEPTH / 64],
    /// For the container at depth `d + 1` (d < TRACKED_DEPTH): the wanted paths still possible
    /// below it.
    live: [u32; TRACKED_DEPTH],
    key: [u8; KEY_CAP],
    key_len: usize,
    key_too_long: bool,
    capture: Vec<u8>,
    capture_id: Option<u8>,
    capture_depth: usize,
    capture_too_big: bool,
    /// Where the capture began in the chunk being fed (0 when it began in an earlier chunk).
    capture_from: usize,
}

impl JsonScan {
    pub(crate) fn new(spec: &'static Spec) -> Self {
        JsonScan {
            spec,
            state: State::Value,
            depth: 0,
            arrays: [0; MAX_DEPTH / 64],
            live: [0; TRACKED_DEPTH],
            key: [0; KEY_CAP],
            key_len: 0,
            key_too_long: false,
            capture: Vec::new(),
            capture_id: None,
            capture_depth: 0,
            capture_too_big: false,
            capture_from: 0,
        }
    }

    /// Starts over on a new document, keeping the buffers' memory.
    pub(crate) fn reset(&mut self, spec: &'static Spec) {
        self.spec = spec;
        self.state = State::Value;
        self.depth = 0;
        self.key_len = 0;
        self.key_too_long = false;
        self.capture.clear();
        self.capture_id = None;
        self.capture_too_big = false;
    }

    pub(crate) fn buffered_capacity(&self) -> usize {
        self.capture.capacity()
    }

    /// Whether a whole top-level value was read.
    pub(crate) fn is_complete(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the scan stopped on bytes that are not JSON.
    #[cfg(test)]
    pub(crate) fn is_broken(&self) -> bool {
        self.state == State::Broken
    }

    /// Ends the document: a top-level number or literal ends here.
    pub(crate) fn finish(&mut self, sink: &mut impl FnMut(u8, Captured<'_>)) {
        if self.state == State::Literal && self.depth == 0 {
            if self.capture_id.is_some() {
                self.end_capture(&[], 0, sink);
            }
            self.state = State::Done;
        }
    }

    pub(crate) fn feed(&mut self, chunk: &[u8], sink: &mut impl FnMut(u8, Captured<'_>)) {
        self.capture_from = 0;
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            match self.state {
                State::Done | State::Broken => return,
                State::InString { escape } => {
                    if escape {
                        self.state = State::InString { escape: false };
                        i += 1;
                        continue;
                    }
                    match memchr::memchr2(b'"', b'\\', &chunk[i..]) {
                        None => i = chunk.len(),
                        Some(off) => {
                            let at = i + off;
                            if chunk[at] == b'\\' {
                                self.state = State::InString { escape: true };
                            } else {
                                self.state = State::After;
                                if self.capture_id.is_some() && self.capture_depth == self.depth {
                                    self.end_capture(chunk, at + 1, sink);
                                }
                                self.after_top_level_value();
                            }
                            i = at + 1;
                        }
                    }
                    continue;
                }
                State::InKey { escape } => {
                    if escape {
                        self.push_key_byte(b);
                        self.state = State::InKey { escape: false };
                    } else if b == b'"' {
                        self.state = State::Colon;
                    } else {
                        if b == b'\\' {
                            self.state = State::InKey { escape: true };
                        }
                        self.push_key_byte(b);
                    }
                    i += 1;
                    continue;
                }
                State::Literal => {
                    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.') {
                        i += 1;
                    } else {
                        self.state = State::After;
                        if self.capture_id.is_some() && self.capture_depth == self.depth {
                            self.end_capture(chunk, i, sink);
                        }
                        self.after_top_level_value();
                    }
                    continue;
                }
                _ => {}
            }
            if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                i += 1;
                continue;
            }
            match self.state {
                State::Value | State::ArrayFirst => {
                    if self.state == State::ArrayFirst && b == b']' {
                        self.close(chunk, i, sink);
                    } else {
                        self.begin_value(i, b, sink);
                    }
                }
                State::ObjectFirst | State::Key => {
                    if b == b'"' {
                        self.key_len = 0;
                        self.key_too_long = false;
                        self.state = State::InKey { escape: false };
                    } else if b == b'}' && self.state == State::ObjectFirst {
                        self.close(chunk, i, sink);
                    } else {
                        self.state = State::Broken;
                    }
                }
                State::Colon => {
                    self.state = if b == b':' {
                        State::Value
                    } else {
                        State::Broken
                    };
                }
                State::After => match b {
                    b',' if self.depth > 0 => {
                        self.state = if self.in_array() {
                            State::Value
                        } else {
                            State::Key
                        };
                    }
                    b'}' | b']' if self.depth > 0 && (b == b']') == self.in_array() => {
                        self.close(chunk, i, sink);
                    }
                    _ => self.state = State::Broken,
                },
                _ => self.state = State::Broken,
            }
            i += 1;
        }
        if self.capture_id.is_some() && !self.capture_too_big {
            self.keep(&chunk[self.capture_from.min(chunk.len())..]);
        }
    }

    fn in_array(&self) -> bool {
        let d = self.depth - 1;
        self.arrays[d / 64] & (1 << (d % 64)) != 0
    }

    fn push_key_byte(&mut self, b: u8) {
        if self.key_len < KEY_CAP {
            self.key[self.key_len] = b;
            self.key_len += 1;
        } else {
            self.key_too_long = true;
        }
    }

    fn after_top_level_value(&mut self) {
        if self.depth == 0 {
            self.state = State::Done;
        }
    }

    /// Which wanted path, if any, is this value, and which paths stay possible below it.
    fn match_value(&self) -> (Option<&'static Path>, u32) {
        if self.depth == 0 {
            let all = if self.spec.len() >= 32 {
                u32::MAX
            } else {
                (1u32 << self.spec.len()) - 1
            };
            return (None, all);
        }
        let parent = self.depth - 1;
        if parent >= TRACKED_DEPTH {
            return (None, 0);
        }
        let mut live = self.live[parent];
        let in_array = self.in_array();
        let key = &self.key[..self.key_len];
        let mut target = None;
        let mut below = 0u32;
        while live != 0 {
            let p = live.trailing_zeros() as usize;
            live &= live - 1;
            let Some(path) = self.spec.get(p) else {
                continue;
            };
            let Some(seg) = path.segs.get(parent) else {
                continue;
            };
            let hit = match seg {
                Seg::Index => in_array,
                Seg::Key(k) => !in_array && !self.key_too_long && k.as_bytes() == key,
            };
            if !hit {
                continue;
            }
            if path.segs.len() == self.depth {
                target = target.or(Some(path));
            } else {
                below |= 1 << p;
            }
        }
        (target, below)
    }

    fn begin_value(&mut self, i: usize, b: u8, sink: &mut impl FnMut(u8, Captured<'_>)) {
        let (target, below) = self.match_value();
        if let Some(path) = target
            && self.capture_id.is_none()
        {
            if path.copy {
                self.capture_id = Some(path.id);
                self.capture_depth = self.depth;
                self.capture_from = i;
                self.capture.clear();
                self.capture_too_big = false;
            } else {
                sink(path.id, Captured::Present);
            }
        }
        match b {
            b'{' | b'[' => {
                if self.depth >= MAX_DEPTH {
                    self.state = State::Broken;
                    return;
                }
                let d = self.depth;
                if b == b'[' {
                    self.arrays[d / 64] |= 1 << (d % 64);
                } else {
                    self.arrays[d / 64] &= !(1 << (d % 64));
                }
                if d < TRACKED_DEPTH {
                    self.live[d] = below;
                }
                self.depth += 1;
                self.state = if b == b'[' {
                    State::ArrayFirst
                } else {
                    State::ObjectFirst
                };
            }
            b'"' => self.state = State::InString { escape: false },
            b'}' | b']' | b',' | b':' => self.state = State::Broken,
            _ => self.state = State::Literal,
        }
    }

    fn close(&mut self, chunk: &[u8], i: usize, sink: &mut impl FnMut(u8, Captured<'_>)) {
        self.depth -= 1;
        self.state = State::After;
        if self.capture_id.is_some() && self.capture_depth == self.depth {
            self.end_capture(chunk, i + 1, sink);
        }
        self.after_top_level_value();
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.capture.len() + bytes.len() > CAPTURE_CAP {
            self.capture_too_big = true;
            self.capture.clear();
        } else {
            self.capture.extend_from_slice(bytes);
        }
    }

    /// The captured value ends just before `chunk[end]`.
    fn end_capture(&mut self, chunk: &[u8], end: usize, sink: &mut impl FnMut(u8, Captured<'_>)) {
        if !self.capture_too_big {
            let from = self.capture_from.min(end);
            self.keep(&chunk[from..end]);
        }
        if let Some(id) = self.capture_id.take() {
            if self.capture_too_big {
                sink(id, Captured::TooBig);
            } else {
                sink(id, Captured::Value(&self.capture));
            }
        }
        self.capture.clear();
        self.capture_too_big = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &Spec = &[
        Path {
            id: 1,
            segs: &[Seg::Key("usage")],
            copy: true,
        },
        Path {
            id: 2,
            segs: &[Seg::Key("model")],
            copy: true,
        },
        Path {
            id: 3,
            segs: &[Seg::Index, Seg::Key("usage")],
            copy: true,
        },
        Path {
            id: 4,
            segs: &[Seg::Key("data"), Seg::Index],
            copy: false,
        },
        Path {
            id: 5,
            segs: &[Seg::Key("n")],
            copy: true,
        },
    ];

    fn scan(parts: &[&[u8]]) -> (Vec<(u8, String)>, bool) {
        let mut scan = JsonScan::new(SPEC);
        let mut got = Vec::new();
        let mut sink = |id, c: Captured<'_>| {
            got.push((
                id,
                match c {
                    Captured::Value(v) => String::from_utf8_lossy(v).into_owned(),
                    Captured::TooBig => "<big>".to_owned(),
                    Captured::Present => "<present>".to_owned(),
                },
            ))
        };
        for p in parts {
            scan.feed(p, &mut sink);
        }
        scan.finish(&mut sink);
        let done = scan.is_complete();
        (got, done)
    }

    #[test]
    fn captures_values_at_their_paths_only() {
        let body = br#"{"id":"x","model":"gpt-4o","choices":[{"usage":{"no":1}}],
            "text":"has \"usage\": {} inside","data":[{"b64":"AAAA"},{}],
            "usage":{"prompt_tokens":19,"details":{"a":[1,2]}}}"#;
        let (got, done) = scan(&[body]);
        assert!(done);
        assert_eq!(
            got,
            vec![
                (2, "\"gpt-4o\"".to_owned()),
                (4, "<present>".to_owned()),
                (4, "<present>".to_owned()),
                (
                    1,
                    r#"{"prompt_tokens":19,"details":{"a":[1,2]}}"#.to_owned()
                ),
            ]
        );
    }

    #[test]
    fn every_split_gives_the_same_captures() {
        let body = br#"[{"usage":{"a":1}} , {"usage":{"a":22},"x":"\\\"]"}]"#;
        let whole = scan(&[body]);
        assert_eq!(whole.0.len(), 2);
        assert!(whole.1);
        for cut in 0..=body.len() {
            let (a, b) = body.split_at(cut);
            assert_eq!(scan(&[a, b]), whole, "split at {cut}");
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(scan(&bytes), whole);
    }

    #[test]
    fn top_level_number_ends_at_finish() {
        let (got, done) = scan(&[br#"{"n":12"#, b"3}"]);
        assert_eq!(got, vec![(5, "123".to_owned())]);
        assert!(done);
        let (got, done) = scan(&[b"42"]);
        assert!(got.is_empty() && done);
    }

    #[test]
    fn oversized_values_are_reported_without_their_text() {
        let mut body = br#"{"usage":""#.to_vec();
        body.extend(std::iter::repeat_n(b'x', CAPTURE_CAP + 10));
        body.extend_from_slice(br#"","model":"m"}"#);
        let (got, _) = scan(&[&body[..100], &body[100..]]);
        assert_eq!(got, vec![(1, "<big>".to_owned()), (2, "\"m\"".to_owned())]);
    }

    #[test]
    fn garbage_and_deep_nesting_stop_without_panic() {
        let (got, done) = scan(&[b"{\"a\" 1}"]);
        assert!(got.is_empty() && !done);
        let deep = vec![b'['; MAX_DEPTH + 5];
        let mut s = JsonScan::new(SPEC);
        s.feed(&deep, &mut |_, _| {});
        assert!(s.is_broken());
        let (_, done) = scan(&[b"]"]);
        assert!(!done);
    }
}
