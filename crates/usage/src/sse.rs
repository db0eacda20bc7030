//! Server-sent events, framed incrementally with a fixed amount of memory.
//!
//! The framer follows the WHATWG event-stream rules that the providers' SDKs follow: lines end in
//! CR, LF or CRLF (a CR at the end of one chunk and an LF at the start of the next are one line
//! end); a blank line ends an event; `:` starts a comment; one optional space after `field:` is
//! dropped; several `data:` lines are joined with LF; an event cut off by the end of the body is
//! not dispatched.
//!
//! Lines are never buffered whole. The field name is read into a few bytes, then the value is
//! passed on as it arrives: an `event:` name into a small buffer, `data:` into the event's data
//! buffer, but only when the handler says an event of that name can carry usage (the `event:`
//! line precedes `data:` in every provider's streams; an event whose data comes before its name
//! is judged by the name seen so far). The data buffer holds [`EVENT_CAP`] bytes; an event that
//! grows beyond it is not dropped but streamed through the JSON scanner from then on, so a large
//! event (a Responses `response.completed` repeating a long answer) still yields its usage.

use crate::handler::Handler;
use crate::json_scan::{JsonScan, Spec};

/// The data of one event kept in memory before it is streamed instead.
pub(crate) const EVENT_CAP: usize = 64 * 1024;
/// Longest event name kept; longer names cannot match any provider's event.
const NAME_CAP: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Data,
    Event,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    /// At the start of a line.
    Start,
    /// Reading the field name.
    Name,
    /// Just after `name:`, where one space is dropped.
    ValueStart(Field),
    Value(Field),
}

#[derive(Clone, Copy, Debug)]
enum Data {
    /// The event's data is not wanted.
    Skip,
    /// Kept in `data`.
    Buffer(&'static Spec),
    /// Too big for `data`: fed to the JSON scanner as it arrives.
    Stream,
}

#[derive(Debug)]
pub(crate) struct SseFramer {
    line: Line,
    /// The previous line ended in CR: an LF right after it belongs to the same line end.
    after_cr: bool,
    field: [u8; 5],
    field_len: usize,
    name: [u8; NAME_CAP],
    name_len: usize,
    name_too_long: bool,
    data_lines: usize,
    mode: Data,
    data: Vec<u8>,
    json: JsonScan,
}

impl SseFramer {
    pub(crate) fn new() -> Self {
        SseFramer {
            line: Line::Start,
            after_cr: false,
            field: [0; 5],
            field_len: 0,
            name: [0; NAME_CAP],
            name_len: 0,
            name_too_long: false,
            data_lines: 0,
            mode: Data::Skip,
            data: Vec::new(),
            json: JsonScan::new(&[]),
        }
    }

    pub(crate) fn buffered_capacity(&self) -> usize {
        self.data.capacity() + self.json.buffered_capacity()
    }

    fn name(&self) -> &[u8] {
        if self.name_too_long {
            b"\xff"
        } else {
            &self.name[..self.name_len]
        }
    }

    pub(crate) fn feed(&mut self, chunk: &[u8], h: &mut Handler) {
        let mut i = 0;
        while i < chunk.len() {
            if self.after_cr {
                self.after_cr = false;
                if chunk[i] == b'\n' {
                    i += 1;
                    continue;
                }
            }
            match self.line {
                Line::Start => {
                    let b = chunk[i];
                    if b == b'\n' || b == b'\r' {
                        self.after_cr = b == b'\r';
                        self.dispatch(h);
                        i += 1;
                    } else {
                        self.field_len = 0;
                        self.line = Line::Name;
                    }
                }
                Line::Name => {
                    let rest = &chunk[i..];
                    // The two fields that matter, whole in this chunk: no search needed.
                    if self.field_len == 0 {
                        let known = if rest.starts_with(b"data:") {
                            Some((Field::Data, 5))
                        } else if rest.starts_with(b"event:") {
                            Some((Field::Event, 6))
                        } else {
                            None
                        };
                        if let Some((field, len)) = known {
                            self.line = Line::ValueStart(field);
                            self.begin_value(field, h);
                            i += len;
                            continue;
                        }
                    }
                    let end = memchr::memchr3(b':', b'\r', b'\n', rest);
                    let name_part = &rest[..end.unwrap_or(rest.len())];
                    for &b in name_part {
                        if self.field_len < self.field.len() {
                            self.field[self.field_len] = b;
                        }
                        self.field_len += 1;
                    }
                    let Some(off) = end else {
                        return;
                    };
                    let field = match &self.field[..self.field_len.min(5)] {
                        b"data" if self.field_len == 4 => Field::Data,
                        b"event" if self.field_len == 5 => Field::Event,
                        _ => Field::Other,
                    };
                    let at = i + off;
                    if chunk[at] == b':' {
                        self.line = Line::ValueStart(field);
                        self.begin_value(field, h);
                    } else {
                        // A line with no colon is a field with an empty value.
                        self.begin_value(field, h);
                        self.after_cr = chunk[at] == b'\r';
                        self.line = Line::Start;
                    }
                    i = at + 1;
                }
                Line::ValueStart(field) => {
                    if chunk[i] == b' ' {
                        i += 1;
                    }
                    self.line = Line::Value(field);
                }
                Line::Value(field) => {
                    let rest = &chunk[i..];
                    let end = memchr::memchr2(b'\r', b'\n', rest);
                    let value = &rest[..end.unwrap_or(rest.len())];
                    self.value_bytes(field, value, h);
                    let Some(off) = end else {
                        return;
                    };
                    let at = i + off;
                    self.after_cr = chunk[at] == b'\r';
                    self.line = Line::Start;
                    i = at + 1;
                }
            }
        }
    }

    fn begin_value(&mut self, field: Field, h: &mut Handler) {
        match field {
            Field::Event => {
                self.name_len = 0;
                self.name_too_long = false;
            }
            Field::Data => {
                if self.data_lines == 0 {
                    self.mode = match h.event_spec(self.name()) {
                        Some(spec) => Data::Buffer(spec),
                        None => Data::Skip,
                    };
                    self.data.clear();
                } else {
                    self.value_bytes(Field::Data, b"\n", h);
                }
                self.data_lines += 1;
            }
            Field::Other => {}
        }
    }

    fn value_bytes(&mut self, field: Field, bytes: &[u8], h: &mut Handler) {
        match field {
            Field::Event => {
                let room = NAME_CAP - self.name_len;
                if bytes.len() > room {
                    self.name_too_long = true;
                } else {
                    self.name[self.name_len..self.name_len + bytes.len()].copy_from_slice(bytes);
                    self.name_len += bytes.len();
                }
            }
            Field::Data => match self.mode {
                Data::Skip => {}
                Data::Buffer(spec) => {
                    if self.data.len() + bytes.len() <= EVENT_CAP {
                        self.data.extend_from_slice(bytes);
                    } else {
                        self.json.reset(spec);
                        self.mode = Data::Stream;
                        let json = &mut self.json;
                        json.feed(&self.data, &mut |id, c| h.capture(id, c));
                        json.feed(bytes, &mut |id, c| h.capture(id, c));
                        self.data.clear();
                    }
                }
                Data::Stream => self.json.feed(bytes, &mut |id, c| h.capture(id, c)),
            },
            Field::Other => {}
        }
    }

    fn dispatch(&mut self, h: &mut Handler) {
        if self.data_lines > 0 {
            let name = if self.name_too_long {
                &b"\xff"[..]
            } else {
                &self.name[..self.name_len]
            };
            match self.mode {
                Data::Skip => h.event_end(name, None),
                Data::Buffer(spec) => {
                    if h.prefilter(name, &self.data) {
                        self.json.reset(spec);
                        let json = &mut self.json;
                        json.feed(&self.data, &mut |id, c| h.capture(id, c));
                        json.finish(&mut |id, c| h.capture(id, c));
                    }
                    h.event_end(name, Some(&self.data));
                }
                Data::Stream => {
                    self.json.finish(&mut |id, c| h.capture(id, c));
                    h.event_end(name, None);
                }
            }
        }
        self.data_lines = 0;
        self.name_len = 0;
        self.name_too_long = false;
        self.data.clear();
        self.mode = Data::Skip;
    }
}

#[cfg(test)]
mod tests {
    use tollgate_domain::Provider;

    use crate::{RequestInfo, Scanned, scanner};

    fn chat(body: &[u8]) -> Scanned {
        let mut s = scanner(&RequestInfo {
            provider: Provider::OpenAi,
            method: "POST",
            path: "/v1/chat/completions",
            query: None,
            request: crate::RequestFacts::none(),
            response_status: 200,
            response_content_type: Some("text/event-stream"),
            response_content_encoding: None,
        });
        s.feed(body);
        s.finish()
    }

    #[test]
    fn comments_multi_line_data_and_bare_fields() {
        let body = b": comment\n\
            retry: 100\n\
            id\n\
            data: {\"model\":\"m\",\n\
            data:  \"usage\":{\"prompt_tokens\":3,\n\
            data:\"completion_tokens\":4}}\n\
            \n\
            data:[DONE]\n\n";
        let got = chat(body);
        assert_eq!(got.model.as_deref(), Some("m"));
        assert_eq!((got.usage.input_tokens, got.usage.output_tokens), (3, 4));
        assert!(got.complete);
    }

    #[test]
    fn an_event_cut_by_the_end_of_the_body_is_not_dispatched() {
        let got = chat(b"data: {\"model\":\"m\",\"usage\":{\"prompt_tokens\":3}}\n");
        assert!(!got.usage_found && !got.complete);
        assert_eq!(got.model, None);
    }

    #[test]
    fn an_oversized_event_is_streamed_not_dropped() {
        let pad = "x".repeat(super::EVENT_CAP * 2);
        let body = format!(
            "data: {{\"model\":\"m\",\"pad\":\"{pad}\",\"usage\":{{\"prompt_tokens\":5}}}}\n\ndata: [DONE]\n\n"
        );
        let got = chat(body.as_bytes());
        assert_eq!(got.usage.input_tokens, 5);
        assert!(got.complete);
    }
}
