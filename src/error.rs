//! Errors by lifecycle: [`StartupError`] ends the process with a message and a
//! non-zero exit; [`Error`] ends one request, mapped to its HTTP status and
//! OpenAI-shaped body in exactly one place ([`Error::into_response`]).

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::config::ConfigError;

/// Anything that stops the router from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot build the upstream HTTP client: {0}")]
    Client(String),
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(String),
}

/// Why one client request failed. Every variant decides its status, type and code
/// below, with no catch-all arm, so a new variant forces a decision everywhere.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed JSON, missing or ill-typed `model` / `messages` / `stream`.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<&'static str>,
    },
    #[error("Request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("The model `{0}` does not exist or is not served by any configured service")]
    ModelNotFound(String),
    #[error("Invalid URL ({method} {path})")]
    UnknownRoute { method: String, path: String },
    #[error("Method {method} is not allowed for {path}")]
    MethodNotAllowed { method: String, path: String },
    /// No client key in the configured header.
    #[error("Missing API key: send it in the {header} header (`Bearer KEY` or `KEY`)")]
    MissingApiKey { header: String },
    /// A key that is not one of ours. The message never repeats it.
    #[error("Invalid API key provided")]
    InvalidApiKey,
    /// A valid client key on an admin-only endpoint.
    #[error("This endpoint requires the admin key")]
    AdminRequired,
    /// This client key used up its own requests-per-window allowance.
    #[error("Rate limit for this API key exceeded; retry after {retry_after_secs} s")]
    KeyRateLimited { retry_after_secs: u64 },
    /// A key reload that would break authentication; the old keys stay.
    #[error("Key reload refused: {0}")]
    ReloadRefused(String),
    /// Every eligible service is rate limited or cooling down.
    #[error("All services are rate limited; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// Every attempt failed to connect.
    #[error("{0}")]
    UpstreamUnreachable(String),
    /// Every attempt timed out.
    #[error("{0}")]
    UpstreamTimeout(String),
    /// Attempts failed, for mixed or HTTP reasons.
    #[error("{0}")]
    ServiceUnavailable(String),
    /// A bug or a panic: the details are logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A wait as a `Retry-After` value: whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
        wait.as_secs_f64().ceil().max(1.0) as u64
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidRequest {
            message: message.into(),
            param: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::ModelNotFound(_) | Error::UnknownRoute { .. } => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::MissingApiKey { .. } | Error::InvalidApiKey => StatusCode::UNAUTHORIZED,
            Error::AdminRequired => StatusCode::FORBIDDEN,
            Error::ReloadRefused(_) => StatusCode::CONFLICT,
            Error::RateLimited { .. } | Error::KeyRateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Error::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            Error::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `error.type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::InvalidRequest { .. }
            | Error::BodyTooLarge { .. }
            | Error::ModelNotFound(_)
            | Error::UnknownRoute { .. }
            | Error::MethodNotAllowed { .. }
            | Error::ReloadRefused(_) => "invalid_request_error",
            Error::MissingApiKey { .. } | Error::InvalidApiKey => "authentication_error",
            Error::AdminRequired => "permission_error",
            Error::RateLimited { .. } | Error::KeyRateLimited { .. } => "rate_limit_exceeded",
            Error::UpstreamUnreachable(_) => "upstream_error",
            Error::ServiceUnavailable(_) => "service_unavailable",
            Error::UpstreamTimeout(_) => "timeout",
            Error::Internal(_) => "internal_error",
        }
    }

    /// OpenAI's `error.code`.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Error::InvalidRequest { .. } => Some("invalid_request_error"),
            Error::BodyTooLarge { .. } => Some("invalid_request_error"),
            Error::ModelNotFound(_) => Some("model_not_found"),
            // SPEC 6 gives one 404 row for an unknown model and an unknown path.
            Error::UnknownRoute { .. } => Some("model_not_found"),
            Error::MethodNotAllowed { .. } => Some("method_not_allowed"),
            Error::MissingApiKey { .. } => Some("missing_api_key"),
            Error::InvalidApiKey => Some("invalid_api_key"),
            Error::AdminRequired => Some("admin_key_required"),
            Error::ReloadRefused(_) => Some("reload_refused"),
            Error::RateLimited { .. } => Some("rate_limit_exceeded"),
            // SPEC 6: every 429 is `rate_limit_exceeded`; the message tells which limit.
            Error::KeyRateLimited { .. } => Some("rate_limit_exceeded"),
            Error::UpstreamUnreachable(_) => Some("upstream_error"),
            Error::ServiceUnavailable(_) => Some("service_unavailable"),
            Error::UpstreamTimeout(_) => Some("timeout"),
            Error::Internal(_) => Some("internal_error"),
        }
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            Error::InvalidRequest { param, .. } => *param,
            Error::ModelNotFound(_) => Some("model"),
            Error::BodyTooLarge { .. }
            | Error::UnknownRoute { .. }
            | Error::MethodNotAllowed { .. }
            | Error::MissingApiKey { .. }
            | Error::InvalidApiKey
            | Error::AdminRequired
            | Error::KeyRateLimited { .. }
            | Error::ReloadRefused(_)
            | Error::RateLimited { .. }
            | Error::UpstreamUnreachable(_)
            | Error::ServiceUnavailable(_)
            | Error::UpstreamTimeout(_)
            | Error::Internal(_) => None,
        }
    }

    /// The message a client may see: internals of a 500 stay in the log.
    fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => {
                "The router hit an unexpected error; it has been logged.".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// A short, fixed name for logs and metric labels.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::InvalidRequest { .. } => "invalid_request",
            Error::BodyTooLarge { .. } => "body_too_large",
            Error::ModelNotFound(_) => "model_not_found",
            Error::UnknownRoute { .. } => "unknown_route",
            Error::MethodNotAllowed { .. } => "method_not_allowed",
            Error::MissingApiKey { .. } => "missing_api_key",
            Error::InvalidApiKey => "invalid_api_key",
            Error::AdminRequired => "admin_required",
            Error::KeyRateLimited { .. } => "key_rate_limited",
            Error::ReloadRefused(_) => "reload_refused",
            Error::RateLimited { .. } => "all_rate_limited",
            Error::UpstreamUnreachable(_) => "upstream_unreachable",
            Error::UpstreamTimeout(_) => "upstream_timeout",
            Error::ServiceUnavailable(_) => "service_unavailable",
            Error::Internal(_) => "internal",
        }
    }

    /// The OpenAI-shaped JSON body of this error.
    pub fn body(&self) -> Vec<u8> {
        error_body(
            &self.public_message(),
            self.error_type(),
            self.code(),
            self.param(),
        )
    }
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: Option<&'a str>,
    param: Option<&'a str>,
}

/// `{"error": {"message", "type", "code", "param"}}`, all four keys present.
pub fn error_body(message: &str, kind: &str, code: Option<&str>, param: Option<&str>) -> Vec<u8> {
    let envelope = ErrorEnvelope {
        error: ErrorObject {
            message,
            kind,
            code,
            param,
        },
    };
    // Serialising four strings into a Vec cannot fail; fall back to a fixed body anyway.
    serde_json::to_vec(&envelope).unwrap_or_else(|_| {
        br#"{"error":{"message":"error","type":"internal_error","code":"internal_error","param":null}}"#.to_vec()
    })
}

/// The [`Error::metric_label`] of an error response (a response extension),
/// for the access layer.
#[derive(Clone, Copy, Debug)]
pub struct ErrorLabel(pub &'static str);

impl ErrorLabel {
    /// Refusals by client authentication (counted as auth failures).
    pub fn is_auth(label: &str) -> bool {
        matches!(
            label,
            "missing_api_key" | "invalid_api_key" | "admin_required" | "key_rate_limited"
        )
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut response = (self.status(), self.body()).into_response();
        response
            .extensions_mut()
            .insert(ErrorLabel(self.metric_label()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Error::RateLimited { retry_after_secs }
        | Error::KeyRateLimited { retry_after_secs } = self
        {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        if matches!(self, Error::BodyTooLarge { .. }) {
            // The rest of the body is not read: this connection cannot carry another request.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if matches!(self, Error::MissingApiKey { .. } | Error::InvalidApiKey) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_all_four_keys() {
        let v: serde_json::Value =
            serde_json::from_slice(&Error::ModelNotFound("m".into()).body()).unwrap();
        let e = &v["error"];
        assert_eq!(e["type"], "invalid_request_error");
        assert_eq!(e["code"], "model_not_found");
        assert_eq!(e["param"], "model");
        assert!(e["message"].as_str().unwrap().contains("`m`"));
        let v: serde_json::Value =
            serde_json::from_slice(&Error::UpstreamTimeout("t".into()).body()).unwrap();
        assert!(v["error"]["param"].is_null());
    }

    #[test]
    fn internal_details_are_not_sent() {
        let e = Error::Internal("secret stack detail".into());
        assert!(
            !String::from_utf8(e.body())
                .unwrap()
                .contains("secret stack detail")
        );
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        let r = Error::RateLimited {
            retry_after_secs: 7,
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
    }
}
