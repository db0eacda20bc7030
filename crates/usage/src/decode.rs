//! Content-Encoding, undone incrementally for the scanner only (the client receives the bytes as
//! they came).
//!
//! One decoder per body, created with it: a decoder per chunk fails on the second chunk. Each
//! decoder writes its output into the scanner in pieces of its own fixed buffer size (32 KiB
//! for flate2, 4 KiB for brotli, zstd's block size), so a compressed body of any ratio is
//! scanned in bounded memory. With no Content-Encoding the first bytes are checked for the gzip
//! magic `1f 8b`, since some edges compress without saying so.
//!
//! A body that fails to decode stops being scanned; what was read before stays, and the reason
//! is reported as `decode_error`.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::{Core, UsageError};

/// Buffer size handed to the brotli decoder.
const BROTLI_BUFFER: usize = 4096;

/// Decoding is bounded so that a compression bomb cannot take a request thread's CPU: a body is
/// decoded for the scanner up to [`RATIO_MAX`] times its compressed size plus [`FLOOR_BYTES`],
/// and never past [`DECODED_MAX_BYTES`]. Real responses compress 3–20 times; at the absolute
/// bound decoding costs well under a second of CPU, spread over the body's chunks (each chunk
/// may add at most `RATIO_MAX` times its size). Past the budget the scan stops with
/// [`OVER_BUDGET`] as its decode error: the usage is then estimated, and the client still gets
/// the body as it came.
pub(crate) const RATIO_MAX: u64 = 64;
pub(crate) const FLOOR_BYTES: u64 = 1 << 20;
pub(crate) const DECODED_MAX_BYTES: u64 = 64 << 20;
pub(crate) const OVER_BUDGET: &str =
    "the decompressed body passed its budget (a compression bomb?)";

/// How many decoded bytes `compressed` bytes may give.
pub(crate) fn budget(compressed: u64) -> u64 {
    compressed
        .saturating_mul(RATIO_MAX)
        .saturating_add(FLOOR_BYTES)
        .min(DECODED_MAX_BYTES)
}

/// Decoding is also sliced in time: a feed decodes for at most [`SLICE`] (looking at the clock
/// between pieces of [`PIECE_BYTES`] compressed bytes) and leaves the rest of its input in a
/// backlog for the next feed, or for the end of the body, which the gateway finishes off its
/// request threads. So a body that is slow to decode — a bomb up to its budget, or a large
/// response on a loaded machine — holds a request thread for about a millisecond per chunk, not
/// for the whole body. The backlog is bounded: past [`BACKLOG_MAX_BYTES`] the scan stops with
/// [`FELL_BEHIND`] (estimated usage; the body still passes).
pub(crate) const SLICE: Duration = Duration::from_millis(1);
/// A feed that decoded for this long held its thread enough to let the others go first (see
/// [`Body::feed_sliced`]); a real response's chunk decodes in microseconds.
pub(crate) const BUSY: Duration = Duration::from_micros(200);
const PIECE_BYTES: usize = 4096;
pub(crate) const BACKLOG_MAX_BYTES: usize = 16 << 20;
pub(crate) const FELL_BEHIND: &str = "decoding fell too far behind the body";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Gzip,
    /// `deflate`, which is zlib-wrapped by the standard and sometimes raw in practice.
    Deflate,
    Brotli,
    Zstd,
}

impl Encoding {
    /// Reads a Content-Encoding header value; `Err` names an unsupported coding.
    pub(crate) fn parse(header: Option<&str>) -> Result<Encoding, UsageError> {
        let Some(value) = header.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(Encoding::Identity);
        };
        match value.to_ascii_lowercase().as_str() {
            "identity" => Ok(Encoding::Identity),
            "gzip" | "x-gzip" => Ok(Encoding::Gzip),
            "deflate" => Ok(Encoding::Deflate),
            "br" => Ok(Encoding::Brotli),
            "zstd" => Ok(Encoding::Zstd),
            other => Err(UsageError::UnsupportedEncoding(other.to_owned())),
        }
    }
}

pub(crate) enum Body {
    /// Not compressed, or not yet known: `held` is a first `1f` byte waiting for its second.
    Plain {
        core: Core,
        sniff: bool,
        held: bool,
    },
    /// `deflate` before its first byte says zlib or raw.
    Deflate(Core),
    Gzip(Box<flate2::write::MultiGzDecoder<Core>>),
    Zlib(Box<flate2::write::ZlibDecoder<Core>>),
    RawDeflate(Box<flate2::write::DeflateDecoder<Core>>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<Core>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Core>>),
    Failed {
        core: Core,
        reason: String,
    },
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Body::Plain { .. } => "Plain",
            Body::Deflate(_) => "Deflate",
            Body::Gzip(_) => "Gzip",
            Body::Zlib(_) => "Zlib",
            Body::RawDeflate(_) => "RawDeflate",
            Body::Brotli(_) => "Brotli",
            Body::Zstd(_) => "Zstd",
            Body::Failed { .. } => "Failed",
        })
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

impl Body {
    pub(crate) fn new(core: Core, encoding: Encoding, sniff_gzip: bool) -> Body {
        match encoding {
            Encoding::Identity => Body::Plain {
                core,
                sniff: sniff_gzip,
                held: false,
            },
            Encoding::Gzip => Body::Gzip(Box::new(flate2::write::MultiGzDecoder::new(core))),
            Encoding::Deflate => Body::Deflate(core),
            Encoding::Brotli => Body::Brotli(Box::new(
                brotli_decompressor::DecompressorWriter::new(core, BROTLI_BUFFER),
            )),
            Encoding::Zstd => match zstd::stream::write::Decoder::new(core) {
                Ok(d) => Body::Zstd(Box::new(d)),
                // Creating the context only fails when memory runs out; nothing to scan then.
                Err(e) => Body::Failed {
                    core: Core::default(),
                    reason: format!("zstd: {e}"),
                },
            },
        }
    }

    pub(crate) fn feed(&mut self, mut chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        match self {
            Body::Plain { core, sniff, held } => {
                if *sniff {
                    if *held {
                        *held = false;
                        *sniff = false;
                        if chunk[0] == GZIP_MAGIC[1] {
                            self.become_gzip(&GZIP_MAGIC[..1]);
                            return self.feed(chunk);
                        }
                        core.feed(&GZIP_MAGIC[..1]);
                    } else if chunk[0] == GZIP_MAGIC[0] {
                        if chunk.len() == 1 {
                            *held = true;
                            return;
                        }
                        *sniff = false;
                        if chunk[1] == GZIP_MAGIC[1] {
                            self.become_gzip(&[]);
                            return self.feed(chunk);
                        }
                    } else {
                        *sniff = false;
                    }
                }
                core.feed(chunk);
            }
            Body::Deflate(core) => {
                let core = std::mem::take(core);
                // A zlib header: compression method 8, window ≤ 32 KiB, header checksum is a
                // multiple of 31 (checked once the second byte is known; one byte is enough
                // to tell zlib from the raw deflate that some servers send).
                *self = if chunk[0] & 0x0f == 8 && chunk[0] >> 4 <= 7 {
                    Body::Zlib(Box::new(flate2::write::ZlibDecoder::new(core)))
                } else {
                    Body::RawDeflate(Box::new(flate2::write::DeflateDecoder::new(core)))
                };
                self.feed(chunk);
            }
            Body::Gzip(d) => {
                d.get_mut().compressed_in += chunk.len() as u64;
                if let Err(e) = write_all(d.as_mut(), &mut chunk) {
                    self.fail("gzip", e);
                }
            }
            Body::Zlib(d) => {
                d.get_mut().compressed_in += chunk.len() as u64;
                if let Err(e) = write_all(d.as_mut(), &mut chunk) {
                    self.fail("deflate", e);
                }
            }
            Body::RawDeflate(d) => {
                d.get_mut().compressed_in += chunk.len() as u64;
                if let Err(e) = write_all(d.as_mut(), &mut chunk) {
                    self.fail("deflate", e);
                }
            }
            Body::Brotli(d) => {
                d.get_mut().compressed_in += chunk.len() as u64;
                if let Err(e) = write_all(d.as_mut(), &mut chunk) {
                    self.fail("br", e);
                }
            }
            Body::Zstd(d) => {
                d.get_mut().compressed_in += chunk.len() as u64;
                if let Err(e) = write_all(d.as_mut(), &mut chunk) {
                    self.fail("zstd", e);
                }
            }
            Body::Failed { .. } => {}
        }
    }

    /// Feeds `chunk` after the `backlog` of compressed bytes earlier feeds left, decoding for
    /// at most [`SLICE`]; what is left is the new backlog. A body known to be plain is fed
    /// whole: scanning plain text is not what a bomb slows down. Answers whether decoding a
    /// compressed body took a good part of the slice ([`BUSY`]): the thread has then been held long enough that the
    /// others should have their turn before this body's next chunk.
    pub(crate) fn feed_sliced(&mut self, backlog: &mut Vec<u8>, chunk: &[u8]) -> bool {
        if backlog.is_empty() && matches!(self, Body::Plain { sniff: false, .. }) {
            self.feed(chunk);
            return false;
        }
        let started = Instant::now();
        let deadline = started + SLICE;
        if !backlog.is_empty() {
            let done = self.feed_until(backlog, deadline);
            backlog.drain(..done);
            if !backlog.is_empty() {
                self.defer(backlog, chunk);
                return true;
            }
        }
        let done = self.feed_until(chunk, deadline);
        self.defer(backlog, &chunk[done..]);
        !matches!(self, Body::Plain { .. }) && started.elapsed() >= BUSY
    }

    /// Everything still waiting, however long it takes (bounded by the budget).
    pub(crate) fn feed_backlog(&mut self, backlog: Vec<u8>) {
        self.feed(&backlog);
    }

    /// Feeds `input` piece by piece until the deadline passes; how much it fed.
    fn feed_until(&mut self, input: &[u8], deadline: Instant) -> usize {
        let mut done = 0;
        for piece in input.chunks(PIECE_BYTES) {
            self.feed(piece);
            done += piece.len();
            if matches!(self, Body::Failed { .. }) {
                return input.len();
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        done
    }

    fn defer(&mut self, backlog: &mut Vec<u8>, rest: &[u8]) {
        if backlog.len() + rest.len() > BACKLOG_MAX_BYTES {
            backlog.clear();
            backlog.shrink_to_fit();
            let core = self.take_core();
            *self = Body::Failed {
                core,
                reason: FELL_BEHIND.to_owned(),
            };
        } else {
            backlog.extend_from_slice(rest);
        }
    }

    fn become_gzip(&mut self, prefix: &[u8]) {
        let Body::Plain { core, .. } = self else {
            return;
        };
        let core = std::mem::take(core);
        *self = Body::Gzip(Box::new(flate2::write::MultiGzDecoder::new(core)));
        self.feed(prefix);
    }

    fn fail(&mut self, coding: &str, e: std::io::Error) {
        let core = self.take_core();
        *self = Body::Failed {
            core,
            reason: format!("{coding} body could not be decoded: {e}"),
        };
    }

    fn take_core(&mut self) -> Core {
        match self {
            Body::Plain { core, .. } | Body::Deflate(core) | Body::Failed { core, .. } => {
                std::mem::take(core)
            }
            Body::Gzip(d) => std::mem::take(d.get_mut()),
            Body::Zlib(d) => std::mem::take(d.get_mut()),
            Body::RawDeflate(d) => std::mem::take(d.get_mut()),
            Body::Brotli(d) => std::mem::take(d.get_mut()),
            Body::Zstd(d) => std::mem::take(d.get_mut()),
        }
    }

    pub(crate) fn core(&self) -> &Core {
        match self {
            Body::Plain { core, .. } | Body::Deflate(core) | Body::Failed { core, .. } => core,
            Body::Gzip(d) => d.get_ref(),
            Body::Zlib(d) => d.get_ref(),
            Body::RawDeflate(d) => d.get_ref(),
            Body::Brotli(d) => d.get_ref(),
            Body::Zstd(d) => d.get_ref(),
        }
    }

    /// Flushes what the decoder still holds into the scanner and returns it, with the reason
    /// decoding failed, if it did. A body cut short inside a compressed block is not an error
    /// here: the scanner reports it as incomplete.
    pub(crate) fn finish(mut self) -> (Core, Option<String>) {
        let flushed = match &mut self {
            Body::Plain { core, held, .. } => {
                if *held {
                    core.feed(&GZIP_MAGIC[..1]);
                }
                Ok(())
            }
            Body::Gzip(d) => d.flush(),
            Body::Zlib(d) => d.flush(),
            Body::RawDeflate(d) => d.flush(),
            Body::Brotli(d) => d.flush(),
            Body::Zstd(d) => d.flush(),
            Body::Deflate(_) | Body::Failed { .. } => Ok(()),
        };
        let reason = match &mut self {
            Body::Failed { reason, .. } => Some(std::mem::take(reason)),
            _ => flushed
                .err()
                .map(|e| format!("body could not be decoded: {e}")),
        };
        (self.take_core(), reason)
    }
}

/// `Write::write_all`, but tolerant of a decoder that accepts nothing after its stream ended
/// (trailing bytes after a complete compressed stream are ignored, not an error).
fn write_all(w: &mut impl Write, chunk: &mut &[u8]) -> std::io::Result<()> {
    while !chunk.is_empty() {
        match w.write(chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => *chunk = &chunk[n.min(chunk.len())..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tollgate_domain::Provider;

    use crate::{RequestInfo, Scanned, Scanner, scanner};

    const BODY: &[u8] = br#"{"model":"m","usage":{"prompt_tokens":3,"completion_tokens":4}}"#;

    fn scan(encoding: Option<&str>, body: &[u8]) -> Scanned {
        scan_in_chunks(encoding, body, 3)
    }

    /// A scanner for an OpenAI chat completion's JSON body in `encoding`.
    fn json_scanner(encoding: Option<&str>) -> Scanner {
        scanner(&RequestInfo {
            provider: Provider::OpenAi,
            method: "POST",
            path: "/v1/chat/completions",
            query: None,
            request: crate::RequestFacts::none(),
            response_status: 200,
            response_content_type: Some("application/json"),
            response_content_encoding: encoding,
        })
    }

    fn scan_in_chunks(encoding: Option<&str>, body: &[u8], chunk: usize) -> Scanned {
        let mut s = json_scanner(encoding);
        for piece in body.chunks(chunk) {
            s.feed(piece);
        }
        s.finish()
    }

    fn gzip(body: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(body).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn raw_deflate_is_accepted_as_deflate() {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(BODY).unwrap();
        let got = scan(Some("deflate"), &e.finish().unwrap());
        assert_eq!(got.usage.output_tokens, 4);
        assert_eq!(got.decode_error, None);
    }

    #[test]
    fn corrupt_and_unsupported_bodies_say_so() {
        let mut packed = gzip(BODY);
        let mid = packed.len() / 2;
        packed[mid..].iter_mut().for_each(|b| *b = !*b);
        let got = scan(Some("gzip"), &packed);
        assert!(got.decode_error.is_some());
        assert!(!got.usage_found);

        let got = scan(Some("compress"), BODY);
        assert_eq!(
            got.decode_error.as_deref(),
            Some("unsupported content-encoding \"compress\"")
        );
    }

    #[test]
    fn a_cut_gzip_body_is_incomplete_not_failed() {
        let packed = gzip(BODY);
        let got = scan(Some("gzip"), &packed[..packed.len() - 12]);
        assert!(!got.complete);
    }

    #[test]
    fn a_lone_first_byte_is_held_for_the_sniff() {
        // `1f` then a byte that is not `8b`: not gzip, and the held byte is still scanned.
        let got = scan(None, b"\x1f{");
        assert!(!got.usage_found);
        assert_eq!(scan(None, BODY).usage.input_tokens, 3);
    }

    /// A JSON body of `size` bytes, nearly all one repeated letter: it compresses about a
    /// thousand times (gzip) to a million times (zstd, brotli).
    fn bomb(coding: &str, size: usize) -> Vec<u8> {
        fn fill(mut out: impl Write, size: usize) {
            let piece = vec![b'a'; 1 << 20];
            out.write_all(br#"{"pad":""#).unwrap();
            for _ in 0..size >> 20 {
                out.write_all(&piece).unwrap();
            }
            out.write_all(br#"","usage":{"prompt_tokens":3,"completion_tokens":4}}"#)
                .unwrap();
        }
        match coding {
            "gzip" => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                fill(&mut e, size);
                e.finish().unwrap()
            }
            "zstd" => {
                let mut e = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
                fill(&mut e, size);
                e.finish().unwrap()
            }
            _ => {
                let mut e = brotli::CompressorWriter::new(Vec::new(), 4096, 1, 22);
                fill(&mut e, size);
                e.into_inner()
            }
        }
    }

    #[test]
    fn compression_bombs_stop_at_the_decoding_budget() {
        for coding in ["gzip", "zstd", "br"] {
            // 256 MiB expanded, four times the absolute bound and far over the ratio bound.
            let body = bomb(coding, 256 << 20);
            assert!(
                (body.len() as u64) * super::RATIO_MAX < 256 << 20,
                "{coding}: {}",
                body.len()
            );
            let got = scan_in_chunks(Some(coding), &body, 16 * 1024);
            let error = got.decode_error.unwrap_or_default();
            assert!(error.contains("budget"), "{coding}: {error:?}");
            // The usage at the end was never reached: unknown, so estimated by the gateway.
            assert!(!got.usage_found, "{coding}");
        }
    }

    /// 4 MiB of varied text behind a usage, gzipped: it compresses a few times, as responses do.
    fn large_gzip_body() -> Vec<u8> {
        let alphabet = b"abcdefghijklmnopqrstuvwxyz ,.;:";
        let text: Vec<u8> = (0..4u32 << 20)
            .map(|i| alphabet[(i.wrapping_mul(2_654_435_761) >> 16) as usize % alphabet.len()])
            .collect();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(br#"{"pad":""#).unwrap();
        e.write_all(&text).unwrap();
        e.write_all(br#"","usage":{"prompt_tokens":3,"completion_tokens":4}}"#)
            .unwrap();
        let body = e.finish().unwrap();
        assert!(body.len() < text.len() / 2);
        body
    }

    #[test]
    fn a_feed_leaves_what_it_cannot_decode_in_a_slice_for_later() {
        let mut s = json_scanner(Some("gzip"));
        // Half of it decodes to 2 MiB of text to scan: milliseconds of work on any machine,
        // more than one slice.
        let body = large_gzip_body();
        let half = body.len() / 2;
        s.feed(&body[..half]);
        assert!(s.has_backlog(), "one feed decoded {half} bytes whole");
        assert!(
            s.busy(),
            "a feed that left a backlog lets the others go first"
        );
        s.feed(&body[half..]);
        // The rest is decoded at the end: the usage is read as if nothing had been deferred.
        let got = s.finish();
        assert_eq!(got.decode_error, None);
        assert_eq!(got.usage.output_tokens, 4);
    }

    #[test]
    fn a_plain_body_never_holds_its_thread_back() {
        let mut s = json_scanner(None);
        // Scanning plain text is not what a bomb slows down: however large, it is not paced.
        let body = format!(r#"{{"pad":"{}","usage":{{}}}}"#, "a".repeat(4 << 20));
        s.feed(body.as_bytes());
        assert!(!s.busy());
    }

    #[test]
    fn a_large_body_within_its_ratio_is_decoded_whole() {
        // Past the floor, within the ratio: decoded whole.
        let got = scan_in_chunks(Some("gzip"), &large_gzip_body(), 16 * 1024);
        assert_eq!(got.decode_error, None);
        assert_eq!(got.usage.output_tokens, 4);
    }
}
