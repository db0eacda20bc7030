//! Writing the gateway's own answer to the client, in the provider's error shape.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::context::RequestCtx;
use crate::errors::{GatewayError, render};
use crate::request_id;

/// Writes `error` as the provider's error response, with the request's id; answers the status
/// written.
pub async fn write_error(session: &mut Session, ctx: &RequestCtx, error: &GatewayError) -> u16 {
    let rendered = render(ctx.provider, error);
    let body = Bytes::from(rendered.body.to_string());
    let written = async {
        let mut head = ResponseHeader::build(rendered.status, Some(rendered.headers.len() + 2))?;
        for (name, value) in &rendered.headers {
            head.insert_header(*name, value.as_str())?;
        }
        if !ctx.request_id.is_empty() {
            head.insert_header(request_id::HEADER, ctx.request_id.as_str())?;
        }
        head.insert_header("content-length", body.len().to_string())?;
        session.write_response_header(Box::new(head), false).await?;
        session.write_response_body(Some(body), true).await
    }
    .await;
    if let Err(e) = written {
        tracing::debug!(error = %e, "could not write the refusal to the client");
    }
    rendered.status
}
