//! The request id: one per call, in the access log line, on the usage row and in the
//! `x-request-id` response header, so that a client's report of one call finds its line and its
//! row. A client that sends its own `x-request-id` (a tracing id of its own) keeps it when it is
//! sane; otherwise the gateway makes one.

use pingora::http::RequestHeader;

/// The request and response header carrying the id.
pub const HEADER: &str = "x-request-id";

/// Where the provider's own `x-request-id` (OpenAI sends one, which its support asks for) goes
/// when the gateway's takes its place on the response.
pub const UPSTREAM_HEADER: &str = "x-upstream-request-id";

/// The longest client id kept; a longer one is replaced.
const MAX_LEN: usize = 128;

/// The client's `x-request-id` when it is sane (1 to 128 printable ASCII characters, no
/// spaces, so that it cannot break a log line or a header), or a new one.
pub fn of_request(head: &RequestHeader) -> String {
    match head.headers.get(HEADER).map(|v| v.as_bytes()) {
        Some(given) if is_sane(given) => String::from_utf8_lossy(given).into_owned(),
        _ => new(),
    }
}

/// A fresh id: a UUID v7, time-ordered, so ids sort by when their calls began.
pub fn new() -> String {
    tollgate_ledger::UsageEvent::new_id()
}

fn is_sane(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.iter().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(id: Option<&[u8]>) -> RequestHeader {
        let mut head = RequestHeader::build("POST", b"/openai/v1/chat/completions", None).unwrap();
        if let Some(id) = id {
            head.insert_header(HEADER, id).unwrap();
        }
        head
    }

    #[test]
    fn a_sane_client_id_is_kept() {
        assert_eq!(of_request(&head(Some(b"trace-42/abc"))), "trace-42/abc");
        let longest = "a".repeat(MAX_LEN);
        assert_eq!(of_request(&head(Some(longest.as_bytes()))), longest);
    }

    #[test]
    fn a_missing_or_odd_client_id_is_replaced_by_a_new_one() {
        let made = of_request(&head(None));
        assert_eq!(made.len(), 36, "{made}");
        assert_ne!(made, of_request(&head(None)));
        let too_long = "a".repeat(MAX_LEN + 1);
        let odd: [&[u8]; 5] = [
            too_long.as_bytes(),
            b"with space",
            b"tab\there",
            b"caf\xc3\xa9",
            b"",
        ];
        for odd in odd {
            let got = of_request(&head(Some(odd)));
            assert_eq!(got.len(), 36, "{odd:?} gave {got}");
        }
    }
}
