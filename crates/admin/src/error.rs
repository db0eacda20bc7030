//! The admin API's one error type, and how each error is answered: a real status (400, 401,
//! 403, 404, 409, 422; 500 only for the server's own failures) with a JSON body that carries the
//! seed's `detail` string beside `success: false` and a stable `code`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    BadRequest(String),
    #[error(
        "missing or invalid credentials: send an admin token or a Tollgate key as `Authorization: Bearer …`"
    )]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A configuration reload refused: every problem, as `tollgate check` prints it.
    #[error(
        "the configuration was not reloaded; the one in force keeps serving. Fix these and \
         reload again:\n{}", .0.join("\n")
    )]
    InvalidConfig(Vec<String>),
    #[error("{0}")]
    Internal(String),
    #[error("ledger: {0}")]
    Ledger(#[from] tollgate_ledger::LedgerError),
    /// An alert's webhook POST did not go through. `problem` is ours, never the HTTP client's
    /// text, which repeats the URL (and a URL may carry a token in its query).
    #[error("POST {url}: {problem}")]
    WebhookUnsent { url: String, problem: &'static str },
    /// An alert's webhook answered something other than 2xx.
    #[error("POST {url}: answered {status}")]
    WebhookRefused { url: String, status: StatusCode },
    /// An alert's message was not accepted by the SMTP server.
    #[error("SMTP {server}: {problem}")]
    MailUnsent { server: String, problem: String },
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    /// What went wrong, for people (the seed's FastAPI-style field).
    pub detail: String,
    /// A stable machine-readable code: `bad_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `invalid_config`, `internal`.
    pub code: String,
    /// With `invalid_config`: every problem found, one per entry (`file:line: error: …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<String>>,
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden(_) => StatusCode::FORBIDDEN,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::InvalidConfig(_) => StatusCode::UNPROCESSABLE_ENTITY,
            // Webhook and mail failures are the background deliverers' and never reach an API caller.
            AdminError::Internal(_)
            | AdminError::Ledger(_)
            | AdminError::WebhookUnsent { .. }
            | AdminError::WebhookRefused { .. }
            | AdminError::MailUnsent { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            AdminError::BadRequest(_) => "bad_request",
            AdminError::Unauthorized => "unauthorized",
            AdminError::Forbidden(_) => "forbidden",
            AdminError::NotFound(_) => "not_found",
            AdminError::Conflict(_) => "conflict",
            AdminError::InvalidConfig(_) => "invalid_config",
            AdminError::Internal(_)
            | AdminError::Ledger(_)
            | AdminError::WebhookUnsent { .. }
            | AdminError::WebhookRefused { .. }
            | AdminError::MailUnsent { .. } => "internal",
        }
    }

    pub fn not_found_user(user_id: &str) -> AdminError {
        AdminError::NotFound(format!("user {user_id:?} not found"))
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            // The database's message stays in the log: it may name tables, hosts or users.
            AdminError::Ledger(e) => {
                tracing::error!(error = %e, "admin API: ledger query failed");
                "internal error reading the ledger; see the gateway's log".to_owned()
            }
            other => other.to_string(),
        };
        let problems = match &self {
            AdminError::InvalidConfig(problems) => Some(problems.clone()),
            _ => None,
        };
        let body = ErrorBody {
            success: false,
            detail,
            code: self.code().to_owned(),
            problems,
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

pub type Result<T, E = AdminError> = std::result::Result<T, E>;
