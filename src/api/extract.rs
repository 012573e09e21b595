//! Routed request bodies, read by the routed handlers after the key check: every
//! way a body can be wrong (too large, unreadable, not JSON, no `model`) becomes
//! an OpenAI-shaped [`Error`], never axum's plain-text rejection.
//!
//! The body is kept as bytes and only peeked at: `model` and `stream` are read
//! with a borrowing partial parse, nothing else is materialised.

use std::ops::Range;

use axum::extract::Request;
use bytes::Bytes;
use http::header;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::error::Error;
use crate::routing::Endpoint;

/// A routed request body: the original bytes plus what routing needs from them.
#[derive(Debug)]
pub struct PeekedBody {
    pub body: Bytes,
    pub model: String,
    /// Where the `model` value (a JSON string, quotes included) sits in `body`.
    pub model_span: Range<usize>,
    pub stream: bool,
}

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    stream: Option<bool>,
    messages: Option<IgnoredAny>,
}

impl PeekedBody {
    /// Peeks `model` (required) and `stream`; for chat, `messages` is required too.
    pub fn parse(body: Bytes, endpoint: Endpoint) -> Result<Self, Error> {
        // serde would also accept a JSON array as a struct; the API wants an object.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(Error::invalid(if body.trim_ascii().is_empty() {
                "The request body is empty; expected a JSON object"
            } else {
                "The request body must be a JSON object"
            }));
        }
        let peek: Peek<'_> = serde_json::from_slice(&body).map_err(|e| Error::InvalidRequest {
            message: format!("We could not parse the JSON body of your request: {e}"),
            param: None,
        })?;
        let raw = peek.model.ok_or(Error::InvalidRequest {
            message: "Missing required parameter: 'model'.".to_owned(),
            param: Some("model"),
        })?;
        let model: String = serde_json::from_str::<std::borrow::Cow<'_, str>>(raw.get())
            .map_err(|_| Error::InvalidRequest {
                message: "Invalid type for 'model': expected a string.".to_owned(),
                param: Some("model"),
            })?
            .into_owned();
        if model.trim().is_empty() || model.split('|').all(|m| m.trim().is_empty()) {
            return Err(Error::InvalidRequest {
                message: "Invalid value for 'model': it must name a model.".to_owned(),
                param: Some("model"),
            });
        }
        if endpoint == Endpoint::ChatCompletions && peek.messages.is_none() {
            return Err(Error::InvalidRequest {
                message: "Missing required parameter: 'messages'.".to_owned(),
                param: Some("messages"),
            });
        }
        // `raw` borrows from `body`, so its offset is a pointer difference.
        let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
        let model_span = start..start + raw.get().len();
        let stream = peek.stream.unwrap_or(false);
        Ok(Self {
            body,
            model,
            model_span,
            stream,
        })
    }
}

/// The bytes of a request body, refused with 413 past the configured limit.
pub async fn read_body(req: Request, limit: usize) -> Result<Bytes, Error> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::BodyTooLarge { limit });
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = source {
                if err.is::<http_body_util::LengthLimitError>() {
                    return Error::BodyTooLarge { limit };
                }
                source = err.source();
            }
            Error::invalid(format!("Could not read the request body: {e}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peek(s: &'static str) -> Result<PeekedBody, Error> {
        PeekedBody::parse(Bytes::from_static(s.as_bytes()), Endpoint::ChatCompletions)
    }

    #[test]
    fn reads_model_stream_and_the_model_span() {
        let p =
            peek(r#"{"messages":[],"stream":true,"model":"org\/m|b","tools":[{"x":1}]}"#).unwrap();
        assert_eq!(p.model, "org/m|b");
        assert!(p.stream);
        assert_eq!(&p.body[p.model_span.clone()], br#""org\/m|b""#);
    }

    #[test]
    fn rejects_what_openai_rejects() {
        for (body, needle) in [
            ("", "empty"),
            ("[1,2]", "JSON object"),
            ("{\"model\": ", "parse"),
            (r#"{"messages":[]}"#, "'model'"),
            (r#"{"model":5,"messages":[]}"#, "'model'"),
            (r#"{"model":"m"}"#, "'messages'"),
            (r#"{"model":"m","messages":[],"stream":"yes"}"#, "parse"),
            (r#"{"model":" | ","messages":[]}"#, "'model'"),
        ] {
            let err = peek(body).unwrap_err();
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST, "{body}");
            assert!(err.to_string().contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn embeddings_do_not_need_messages() {
        let p = PeekedBody::parse(
            Bytes::from_static(br#"{"model":"e","input":"x"}"#),
            Endpoint::Embeddings,
        )
        .unwrap();
        assert!(!p.stream);
    }
}
