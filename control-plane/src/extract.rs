//! Request extractors whose rejections use the API's error shape.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// JSON body. Syntax errors, wrong types, unknown fields and oversize bodies are all 400 (bad input,
/// as the API contract groups them), each with its own code.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Parsed in two steps: first to a JSON value (syntax), then to `T` with the path of the
        // offending field kept, so every data error names its field.
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(rejection) => return Err(json_rejection(rejection)),
        };
        object(value)
    }
}

/// A parsed body as `T`: it must be an object; whole-number decimals count as integers.
fn object<T: DeserializeOwned>(mut value: serde_json::Value) -> Result<Json<T>, ApiError> {
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "validation_failed",
            "the request body must be a JSON object",
        ));
    }
    integral(&mut value);
    serde_path_to_error::deserialize(value)
        .map(Json)
        .map_err(|e| data_error(&e))
}

/// Turns every number written with a zero fraction (`1.0`, `1e3`) into the integer it is. JSON does
/// not tell the two apart, nor does the OpenAPI document's `integer`; serde would refuse `1.0` for
/// an integer field.
fn integral(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64())
                && f.fract() == 0.0
            {
                // Within ±2^53 a float is exactly its integer; larger ones are left for serde to refuse.
                const EXACT: f64 = 9_007_199_254_740_992.0;
                if f.abs() <= EXACT {
                    *n = (f as i64).into();
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral),
        Value::Object(fields) => fields.values_mut().for_each(integral),
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
}

/// A body that is JSON but not the expected shape: 400 naming the field.
fn data_error(e: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.inner().to_string();
    // A missing field is named only in serde's message ("missing field `password`"), and the path
    // then points at its parent; every other error's path already ends at the field.
    let missing = inner
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    let field = match (path.as_str(), missing) {
        (".", Some(name)) => name.to_owned(),
        (parent, Some(name)) => format!("{parent}.{name}"),
        (p, None) => p.to_owned(),
    };
    let message = inner.split(" at line ").next().unwrap_or(&inner).to_owned();
    let message = if field.is_empty() || field == "." {
        message
    } else {
        format!("{field}: {message}")
    };
    ApiError {
        field: Some(field).filter(|f| !f.is_empty() && f != "."),
        ..ApiError::bad_request("validation_failed", message)
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonSyntaxError(_) | JsonRejection::JsonDataError(_) => {
            ApiError::bad_request("invalid_json", "request body is not valid JSON")
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::BAD_REQUEST,
            "payload_too_large",
            "request body is too large",
        ),
        other => ApiError::bad_request("bad_request", other.body_text()),
    }
}

impl<T> axum::response::IntoResponse for Json<T>
where
    T: serde::Serialize,
{
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters; a malformed id is 400 `invalid_id`.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ApiError::bad_request(
                "invalid_id",
                format!("bad path parameter: {}", e.body_text()),
            )),
            Err(other) => Err(ApiError::bad_request("bad_request", other.body_text())),
        }
    }
}

/// Query string; bad values are 400 naming the parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::bad_request("invalid_query", e.body_text()))
            }
            Err(other) => Err(ApiError::bad_request("invalid_query", other.body_text())),
        }
    }
}

/// An optional JSON body: no body at all, or the body `null`, is `None`; any other body must be
/// valid JSON of `T`.
impl<S, T> axum::extract::OptionalFromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let has_body = req.headers().contains_key(axum::http::header::CONTENT_TYPE)
            || req
                .headers()
                .get(axum::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v != "0");
        if !has_body {
            return Ok(None);
        }
        let value = match <axum::Json<serde_json::Value> as FromRequest<S>>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(rejection) => return Err(json_rejection(rejection)),
        };
        if value.is_null() {
            return Ok(None);
        }
        object(value).map(Some)
    }
}
