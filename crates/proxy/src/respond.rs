//! Writing the gateway's own answer to the client, in the provider's error shape.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::{FailToProxy, Session};

use crate::body;
use crate::context::RequestCtx;
use crate::errors::{GatewayError, render};
use crate::request_id;

/// Answers a call that failed — refused, or the provider unreachable — and says whether the
/// connection can take the client's next request.
pub async fn answer_failure(
    session: &mut Session,
    ctx: &RequestCtx,
    error: &GatewayError,
) -> FailToProxy {
    if session.response_written().is_some() {
        // The provider's status and part of its body may already be with the client: an error
        // body appended now would pass for the end of the provider's stream. Closing the
        // connection without ending the body is how HTTP/1.1 says it was cut.
        return FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        };
    }
    // The connection serves a next request only if this one's body was read to its end;
    // otherwise the answer says `connection: close`, so that a client does not send its next
    // request on a connection about to close.
    let reusable = session.is_body_done();
    if !reusable {
        session.set_keepalive(None);
    }
    let error_code = write_error(session, ctx, error).await;
    let too_slow = matches!(
        error,
        GatewayError::BodyTimeout { .. } | GatewayError::HeadersTimeout
    );
    if !reusable && !too_slow {
        // A client too slow to send its body in time is not waited for again.
        body::linger(session).await;
    }
    FailToProxy {
        error_code,
        can_reuse_downstream: reusable,
    }
}

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
