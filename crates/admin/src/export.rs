//! A user's export as an HTTP body, streamed as the ledger reads it: the ledger writes the
//! document into one end of an in-memory pipe while the response sends what comes out of the
//! other, so a user with millions of usage rows costs a pipe's buffer, not their history.

use std::io;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncReadExt;
use tollgate_ledger::Ledger;

/// Bytes the pipe holds before the ledger waits for the client to read.
const PIPE_BYTES: usize = 64 * 1024;

/// The response streaming `user_id`'s export. A failure midway ends the body with an error, so
/// that the client sees a broken transfer rather than a document that merely looks short.
pub fn stream(ledger: Ledger, user_id: String) -> Response {
    let (mut writer, reader) = tokio::io::duplex(PIPE_BYTES);
    let export = tokio::spawn(async move { ledger.export_user(&user_id, &mut writer).await });
    let chunks = futures_util::stream::unfold(Some((reader, export)), |state| async move {
        let (mut reader, export) = state?;
        let mut chunk = Vec::with_capacity(PIPE_BYTES);
        match reader.read_buf(&mut chunk).await {
            Ok(0) => match export.await {
                Ok(Ok(_rows)) => None,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "exporting a user failed midway");
                    Some((
                        Err(io::Error::other("the export failed; see the gateway's log")),
                        None,
                    ))
                }
                Err(e) => {
                    tracing::error!(error = %e, "the export task stopped");
                    Some((
                        Err(io::Error::other("the export failed; see the gateway's log")),
                        None,
                    ))
                }
            },
            Ok(_) => Some((Ok(Bytes::from(chunk)), Some((reader, export)))),
            Err(e) => Some((Err(e), None)),
        }
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(chunks),
    )
        .into_response()
}
