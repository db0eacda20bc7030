//! The few facts a scanner needs from the request body: the model, whether a stream was asked
//! for, Tavily's search and extract depth. Read with the same bounded scanner as responses, so a
//! large prompt costs a pass over its bytes and nothing more.

use crate::handler::set_string;
use crate::json_scan::{Captured, JsonScan, Path, Seg, Spec};

const MODEL: u8 = 1;
const STREAM: u8 = 2;
const SEARCH_DEPTH: u8 = 3;
const EXTRACT_DEPTH: u8 = 4;
const URLS: u8 = 5;

static SPEC: &Spec = &[
    Path {
        id: MODEL,
        segs: &[Seg::Key("model")],
        copy: true,
    },
    Path {
        id: STREAM,
        segs: &[Seg::Key("stream")],
        copy: true,
    },
    Path {
        id: SEARCH_DEPTH,
        segs: &[Seg::Key("search_depth")],
        copy: true,
    },
    Path {
        id: EXTRACT_DEPTH,
        segs: &[Seg::Key("extract_depth")],
        copy: true,
    },
    Path {
        id: URLS,
        segs: &[Seg::Key("urls"), Seg::Index],
        copy: false,
    },
];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RequestFacts {
    pub model: Option<String>,
    pub stream: bool,
    pub search_depth: Option<String>,
    pub extract_depth: Option<String>,
    /// Elements of a Tavily extract's `urls` array (a single string counts as none here).
    pub urls: u64,
}

impl RequestFacts {
    /// Reads a JSON body; a body that is not JSON yields no facts, and a multipart form (how
    /// Stability is called) yields its `model` field.
    pub(crate) fn read(body: Option<&[u8]>) -> RequestFacts {
        let mut facts = RequestFacts::default();
        let Some(body) = body else {
            return facts;
        };
        if body.trim_ascii_start().starts_with(b"{") {
            let mut scan = JsonScan::new(SPEC);
            let mut sink = |id, value: Captured<'_>| match id {
                MODEL => set_string(&mut facts.model, value),
                STREAM => facts.stream = value == Captured::Value(b"true"),
                SEARCH_DEPTH => set_string(&mut facts.search_depth, value),
                EXTRACT_DEPTH => set_string(&mut facts.extract_depth, value),
                URLS => facts.urls += 1,
                _ => {}
            };
            scan.feed(body, &mut sink);
            scan.finish(&mut sink);
        } else {
            facts.model = multipart_field(body, "model");
        }
        facts
    }
}

/// The value of a text field in a `multipart/form-data` body, without knowing the boundary:
/// the part whose header names it, up to the next CRLF.
fn multipart_field(body: &[u8], name: &str) -> Option<String> {
    let needle = format!("name=\"{name}\"");
    let at = memchr::memmem::find(body, needle.as_bytes())?;
    let rest = &body[at + needle.len()..];
    let start = memchr::memmem::find(rest, b"\r\n\r\n")? + 4;
    let value = &rest[start..];
    let end = memchr::memmem::find(value, b"\r\n").unwrap_or(value.len());
    let text = std::str::from_utf8(&value[..end]).ok()?.trim();
    (!text.is_empty() && text.len() <= 128).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_facts() {
        let f = RequestFacts::read(Some(
            br#"{"messages":[{"role":"user","content":"{\"model\":\"no\"}"}],"model":"gpt-4o",
                "stream":true,"search_depth":"advanced","urls":["a","b"]}"#,
        ));
        assert_eq!(f.model.as_deref(), Some("gpt-4o"));
        assert!(f.stream);
        assert_eq!(f.search_depth.as_deref(), Some("advanced"));
        assert_eq!(f.urls, 2);
        assert_eq!(
            RequestFacts::read(Some(b"not json")),
            RequestFacts::default()
        );
        assert_eq!(RequestFacts::read(None), RequestFacts::default());
    }

    #[test]
    fn reads_a_multipart_model() {
        let body = b"--xyz\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na cat\r\n\
                     --xyz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nsd3.5-medium\r\n--xyz--\r\n";
        assert_eq!(
            RequestFacts::read(Some(body)).model.as_deref(),
            Some("sd3.5-medium")
        );
    }
}
