//! API errors: every failure is a status code and `{"error": "<what was
//! wrong>"}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::actors::session::SendError;
use crate::actors::supervisor::SupervisorError;
use crate::whatsapp::page::SendRefused;

/// The body of every error answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": "no session named \"acme\""}))]
pub struct ErrorBody {
    /// What was wrong.
    pub error: String,
}

/// An error answer of the API.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Sent as `Retry-After` (whole seconds) when set: the condition is
    /// expected to pass by then (cluster mode: no node runs the session
    /// yet).
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after_s: None }
    }
    /// 503 with `Retry-After: retry_after_s`.
    pub fn unavailable(message: impl Into<String>, retry_after_s: u64) -> Self {
        Self { retry_after_s: Some(retry_after_s), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message) }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after_s {
            res.insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()));
        }
        res.json(ErrorBody { error: self.message.clone() })
    }
}

impl From<SupervisorError> for ApiError {
    fn from(e: SupervisorError) -> Self {
        let status = match &e {
            SupervisorError::InvalidName(_) => StatusCode::BAD_REQUEST,
            SupervisorError::NotFound(_) => StatusCode::NOT_FOUND,
            SupervisorError::Exists(_) | SupervisorError::WrongState { .. } => StatusCode::CONFLICT,
            SupervisorError::Send(send) => match send {
                SendError::NotConnected(_) => StatusCode::CONFLICT,
                SendError::NotLeased => StatusCode::SERVICE_UNAVAILABLE,
                SendError::Refused(SendRefused::NotOnWhatsApp(_) | SendRefused::InvalidWid(_)) => StatusCode::UNPROCESSABLE_ENTITY,
                SendError::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                SendError::Refused(SendRefused::Other(_)) | SendError::Page(_) => StatusCode::BAD_GATEWAY,
            },
            SupervisorError::TooMany(_) => StatusCode::BAD_REQUEST,
            SupervisorError::Store(_) | SupervisorError::NoOwner { .. } => StatusCode::SERVICE_UNAVAILABLE,
            SupervisorError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let retry_after_s = match &e {
            SupervisorError::NoOwner { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        };
        Self { retry_after_s, ..Self::new(status, e.to_string()) }
    }
}

/// A store that fails is a passing condition of the server: 503, and the
/// client may retry (`/health` says when writes succeed again).
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        Self::internal(format!("supervisor unavailable: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_owner_is_503_with_retry_after() {
        let e = ApiError::from(SupervisorError::NoOwner { name: "acme".into(), retry_after_s: 5 });
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        let res = e.error_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers().get(actix_web::http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("5"));
        assert!(e.message.contains("no node runs session \"acme\""), "{}", e.message);
        let other = ApiError::from(SupervisorError::NotFound("acme".into())).error_response();
        assert!(other.headers().get(actix_web::http::header::RETRY_AFTER).is_none());
    }
}
