//! Removing from an OpenAI-compatible chat stream the usage chunk the gateway asked for on the
//! client's behalf.
//!
//! A streaming chat completion reports its usage only when the request sets
//! `stream_options.include_usage`; the gateway sets it so that every stream can be billed
//! exactly. A client that did not ask for it would then receive one chunk more than the
//! provider would have sent it — `{"choices":[],"usage":{…}}` — which some clients do not
//! expect (an empty `choices`). The scanner reads that chunk like any other; this filter then
//! keeps it from the client, so what the client receives is the provider's stream without it,
//! byte for byte.
//!
//! Events are passed on whole: bytes after the last complete event wait for the rest of it (a
//! few hundred bytes in practice, [`HOLD_MAX`] at most, past which they are passed on as they
//! are). Once the usage chunk is gone, everything after it passes through without a copy.

use bytes::{Bytes, BytesMut};
use memchr::memmem;

/// Bytes of an unfinished event held back at most; an event longer than this is passed on
/// unfiltered (no usage chunk is anywhere near this size).
const HOLD_MAX: usize = 64 * 1024;

/// What marks the usage chunk among the stream's events, checked before parsing any event.
const EMPTY_CHOICES: &[u8] = b"\"choices\":[]";

#[derive(Debug, Default)]
pub struct UsageChunkFilter {
    /// The unfinished event held back.
    held: BytesMut,
    /// The usage chunk has been removed: pass everything on.
    done: bool,
}

impl UsageChunkFilter {
    /// The bytes to send the client in place of `chunk`; `end` flushes whatever is held.
    pub fn filter(&mut self, chunk: Bytes, end: bool) -> Bytes {
        if self.done {
            return self.flush_with(chunk);
        }
        if self.held.is_empty() && memmem::find(&chunk, EMPTY_CHOICES).is_none() {
            // The usual chunk: no usage chunk in it; pass on what ends at an event boundary.
            match last_boundary(&chunk) {
                Some(at) if at == chunk.len() => return chunk,
                Some(at) => {
                    self.held.extend_from_slice(&chunk[at..]);
                    return chunk.slice(..at);
                }
                None if end => return chunk,
                None => {
                    self.held.extend_from_slice(&chunk);
                    return self.release_if_too_long();
                }
            }
        }
        self.held.extend_from_slice(&chunk);
        let mut out = BytesMut::new();
        while let Some(len) = event_len(&self.held) {
            let event = self.held.split_to(len);
            if !self.done && is_usage_chunk(&event) {
                self.done = true;
            } else {
                out.extend_from_slice(&event);
            }
        }
        if end || self.done || self.held.len() > HOLD_MAX {
            out.extend_from_slice(&self.held.split());
        }
        out.freeze()
    }

    fn flush_with(&mut self, chunk: Bytes) -> Bytes {
        if self.held.is_empty() {
            return chunk;
        }
        let mut out = self.held.split();
        out.extend_from_slice(&chunk);
        out.freeze()
    }

    fn release_if_too_long(&mut self) -> Bytes {
        if self.held.len() > HOLD_MAX {
            self.held.split().freeze()
        } else {
            Bytes::new()
        }
    }
}

/// The length of the first complete event in `buf` (its blank line included).
fn event_len(buf: &[u8]) -> Option<usize> {
    let lf = memmem::find(buf, b"\n\n").map(|i| i + 2);
    let crlf = memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Where the last complete event in `buf` ends.
fn last_boundary(buf: &[u8]) -> Option<usize> {
    let lf = memmem::rfind(buf, b"\n\n").map(|i| i + 2);
    let crlf = memmem::rfind(buf, b"\r\n\r\n").map(|i| i + 4);
    lf.max(crlf)
}

/// An event whose data is a chunk with no choices and a usage object.
fn is_usage_chunk(event: &[u8]) -> bool {
    if memmem::find(event, EMPTY_CHOICES).is_none() {
        return false;
    }
    let text = String::from_utf8_lossy(event);
    let data: String = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    let Ok(chunk) = serde_json::from_str::<serde_json::Value>(&data) else {
        return false;
    };
    chunk["choices"].as_array().is_some_and(Vec::is_empty) && chunk["usage"].is_object()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
        data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
        data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n\
        data: [DONE]\n\n";

    fn filtered(stream: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut filter = UsageChunkFilter::default();
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
            let end = cut == stream.len();
            let piece = Bytes::copy_from_slice(&stream[at..cut]);
            out.extend_from_slice(&filter.filter(piece, end));
            at = cut;
        }
        out
    }

    #[test]
    fn the_usage_chunk_is_removed_at_every_split() {
        let usage_at = STREAM.find("data: {\"id\":\"c\",\"choices\":[],").unwrap();
        let done_at = STREAM.find("data: [DONE]").unwrap();
        let want = [&STREAM[..usage_at], &STREAM[done_at..]].concat();
        let bytes = STREAM.as_bytes();
        assert_eq!(filtered(bytes, &[]), want.as_bytes());
        for cut in 1..bytes.len() {
            assert_eq!(filtered(bytes, &[cut]), want.as_bytes(), "cut at {cut}");
        }
        let every_byte: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(filtered(bytes, &every_byte), want.as_bytes());
    }

    #[test]
    fn other_streams_pass_unchanged() {
        // No usage chunk; an empty `choices` without usage (a content-filter preamble); CRLF.
        for stream in [
            "data: {\"choices\":[{\"delta\":{}}]}\n\ndata: [DONE]\n\n",
            "data: {\"choices\":[],\"prompt_filter_results\":[]}\n\ndata: [DONE]\n\n",
            "data: {\"choices\":[{\"delta\":{}}]}\r\n\r\ndata: [DONE]\r\n\r\n",
            "data: {\"choices\":[{\"delta\":{}}]}\n\ndata: {\"choi",
        ] {
            let bytes = stream.as_bytes();
            for cut in 1..bytes.len() {
                assert_eq!(filtered(bytes, &[cut]), bytes, "{stream:?} cut at {cut}");
            }
        }
    }
}
