//! The load harness's fixtures, shared by its binaries: HTTP/1.1 framing and the
//! canned OpenAI responses the mock upstream answers with. Everything here is built once at
//! start so that the mock spends its time on the socket, not on formatting: its cost is the same
//! for every target the harness measures, and the smaller it is the more of the machine is left
//! to the proxy under test.

pub mod framing;
pub mod responses;
