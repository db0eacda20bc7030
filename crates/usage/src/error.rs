//! The usage crate's one error type. Scanning itself never fails: a body that cannot be read
//! is reported in [`Scanned`] (`decode_error`, `complete`), since the response
//! still reaches the client. What fails is what surrounds the scan: a Content-Encoding this
//! crate cannot undo, a request body that is not the JSON its provider takes, the
//! `inspect-usage` command's input, and the fuzz check's finding.

use crate::Scanned;
use crate::fuzzing::Call;

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// A request body the gateway must read as JSON (every provider's but Stability's).
    #[error("the request body is not valid JSON: {0}")]
    RequestNotJson(String),
    #[error("the request body must be a JSON object")]
    RequestNotAnObject,
    /// Reported as the scan's `decode_error`; the body is not scanned.
    #[error("unsupported content-encoding {0:?}")]
    UnsupportedEncoding(String),
    #[error("reading the response body: {0}")]
    Read(#[source] std::io::Error),
    #[error("--chunk-size must be at least 1")]
    ZeroChunk,
    /// The same body scanned whole, in chunks of `chunk` bytes and byte by byte gave different
    /// results (`scans`, in that order).
    #[error(
        "{call:?} {encoding:?}: whole {:?}\nchunks of {chunk}: {:?}\nbytes: {:?}",
        .scans[0], .scans[1], .scans[2]
    )]
    Disagreement {
        call: Call,
        encoding: Option<String>,
        chunk: usize,
        scans: Box<[Scanned; 3]>,
    },
    /// The request-facts fuzz check's finding: reading a body (`read`) and the full parse the
    /// read's shortcut stands in for (`parsed`) disagree.
    #[error("{provider} {path}: request facts read {read:?}\nparsed {parsed:?}")]
    FactsDisagree {
        provider: tollgate_domain::Provider,
        path: &'static str,
        read: Box<Result<crate::RequestFacts, String>>,
        parsed: Box<Result<crate::RequestFacts, String>>,
    },
}
