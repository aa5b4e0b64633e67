//! The JSON errors the host answers with itself: `{"error": message, "code": code}`.

use crate::names::NameError;
use crate::objects::ObjectError;
use crate::registry::DeployError;
use crate::routing::RouteError;
use crate::storage::{CommitFailed, StorageError};
use crate::workers::StreamingError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered as `{"error": message, "code": code}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// The stable code clients and the metrics see.
    pub(super) fn code(&self) -> &'static str {
        self.code
    }

    /// 404 `unknown_namespace`: nothing is deployed there (or it cannot be a namespace).
    pub(super) fn unknown_namespace(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "unknown_namespace", message)
    }

    /// 400 `invalid_name`: a namespace or object name that breaks the naming rules.
    pub(super) fn invalid_name(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", message)
    }

    /// The message, for a log line.
    pub(super) fn message(&self) -> &str {
        &self.message
    }

    /// 500 `bad_response`: the object answered something HTTP cannot carry.
    pub(super) fn bad_response(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "bad_response", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message, "code": self.code });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme it wants.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"dohost admin\""),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Room frees up as instances go idle, and a moved object is served by its new owner
            // within a lease: soon.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status.is_client_error() {
            // Refused before its body was read (a wrong token, a body too large, no such
            // namespace): the connection cannot carry another request, so say so, rather than
            // let the client reuse it and fail.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        ApiError::invalid_name(e.to_string())
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::UnknownNamespace(_) => ApiError::unknown_namespace(e.to_string()),
            RouteError::Name(e) => e.into(),
        }
    }
}

impl From<ObjectError> for ApiError {
    fn from(e: ObjectError) -> Self {
        let (status, code) = match &e {
            ObjectError::UnknownNamespace(_) => return ApiError::unknown_namespace(e.to_string()),
            ObjectError::Event(ev) => (StatusCode::INTERNAL_SERVER_ERROR, ev.code()),
            ObjectError::Commit(CommitFailed::Full(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "storage_full")
            }
            ObjectError::Commit(CommitFailed::Failed(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "commit_failed")
            }
            ObjectError::Commit(CommitFailed::Fenced) => (StatusCode::SERVICE_UNAVAILABLE, "moved"),
            ObjectError::Storage(db) if db.is_full() => {
                (StatusCode::INTERNAL_SERVER_ERROR, "storage_full")
            }
            ObjectError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
            ObjectError::Refused(StorageError::LimitExceeded(_)) => {
                (StatusCode::BAD_REQUEST, "limit_exceeded")
            }
            ObjectError::Refused(StorageError::InvalidArgument(_)) => {
                (StatusCode::BAD_REQUEST, "invalid_argument")
            }
            ObjectError::Refused(StorageError::Internal(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "storage_error")
            }
            ObjectError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            ObjectError::Moved => (StatusCode::SERVICE_UNAVAILABLE, "moved"),
            ObjectError::Overloaded(_) | ObjectError::QueueFull { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
            }
        };
        let status = if e.is_overloaded() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            status
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<StreamingError> for ApiError {
    fn from(e: StreamingError) -> Self {
        let message = e.to_string();
        match e {
            StreamingError::Object(e) => e.into(),
            StreamingError::NoAuthority => {
                ApiError::new(StatusCode::BAD_REQUEST, "missing_host", message)
            }
            StreamingError::Informational(_) => ApiError::bad_response(message),
        }
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        let code = match &e {
            DeployError::Namespace(_) => "invalid_name",
            DeployError::NotWasm => "not_wasm",
            DeployError::CoreModule => "core_module",
            DeployError::Invalid(_) => "invalid_component",
            DeployError::WrongWorld(_) | DeployError::NotAWorker(_) => "wrong_world",
            DeployError::OwnedByApp { .. } => "owned_by_app",
            DeployError::Db(db) if db.is_full() => "storage_full",
            DeployError::Db(_) => "storage_error",
        };
        let status = if e.is_client_error() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError::new(status, code, e.to_string())
    }
}
