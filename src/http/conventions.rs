//! HTTP conventions every response keeps, whatever route made it:
//! - 404 for an unknown path, 405 with `Allow` for a known path and a wrong
//!   method ([`no_route`]);
//! - a JSON body `{"error": "..."}` on every error, also those actix-web
//!   makes itself (an extractor's 400, a 413) ([`headers_and_json_errors`]);
//! - `X-Content-Type-Options: nosniff` and `Cache-Control: no-store`;
//! - request bodies bounded in size (`http.max_body_bytes`, multipart part
//!   headers and preamble included; a media send's form up to the largest
//!   `[media]` limit instead; a campaign's form more once its file part
//!   begins, by that file's limit: [`BodyAllowance`]) and in time
//!   (`limits.body_timeout`)
//!   ([`guard_body`]): over the size a 413, too slow a 408.
//!
//! Answered by actix-http's codec before any of this runs, and given their
//! JSON body by [`super::codec_errors`]: a request line or head it cannot
//! parse (400), a head over 96 headers or 128 KiB (431), a head not sent
//! within 5 s (408); the connection is closed after each.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ResourceDef, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{web, Error, HttpRequest, HttpResponse, ResponseError as _};
use futures_util::Stream;

use super::error::ApiError;

/// Every route's pattern and methods, to tell 404 from 405.
pub struct RouteTable(Vec<(ResourceDef, Vec<&'static str>)>);

impl RouteTable {
    /// From `(method, path pattern)` pairs (methods lower case).
    pub fn new(routes: Vec<(&'static str, String)>) -> Self {
        let mut table: Vec<(ResourceDef, Vec<&'static str>)> = Vec::new();
        for (method, path) in routes {
            match table.iter_mut().find(|(def, _)| def.pattern() == Some(path.as_str())) {
                Some((_, methods)) => methods.push(method),
                None => table.push((ResourceDef::new(path), vec![method])),
            }
        }
        Self(table)
    }

    /// The methods a path takes (`GET` implies `HEAD`), upper case; empty
    /// for an unknown path.
    pub fn allowed(&self, path: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (def, methods) in &self.0 {
            if def.is_match(path) {
                for m in methods {
                    out.push(m.to_ascii_uppercase());
                    if *m == "get" {
                        out.push("HEAD".into());
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The default service: 405 with `Allow` when the path exists under
/// another method, else 404.
pub async fn no_route(req: HttpRequest) -> HttpResponse {
    let allowed = req.app_data::<web::Data<RouteTable>>().map(|t| t.allowed(req.path())).unwrap_or_default();
    if allowed.is_empty() {
        return ApiError::new(StatusCode::NOT_FOUND, format!("no route for {} {}", req.method(), req.path())).error_response();
    }
    let allow = allowed.join(", ");
    let mut res = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{} is not allowed on {}; use {allow}", req.method(), req.path()))
        .error_response();
    if let Ok(v) = HeaderValue::from_str(&allow) {
        res.headers_mut().insert(header::ALLOW, v);
    }
    res
}

/// Middleware for the whole app: security and caching headers on every
/// response, and a JSON body on every error response that has none.
pub async fn headers_and_json_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let res = match next.call(req).await {
        Ok(res) => res.map_into_boxed_body(),
        // An error that escaped the handlers still becomes a response here.
        Err(e) => return Err(e),
    };
    let status = res.status();
    let empty = matches!(res.response().body().size(), actix_web::body::BodySize::None | actix_web::body::BodySize::Sized(0));
    let mut res = if (status.is_client_error() || status.is_server_error()) && empty {
        let message = status.canonical_reason().unwrap_or("error").to_string();
        let (req, old) = res.into_parts();
        let mut new = ApiError::new(status, message.to_lowercase()).error_response();
        for (name, value) in old.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                new.headers_mut().insert(name.clone(), value.clone());
            }
        }
        ServiceResponse::new(req, new)
    } else {
        res
    };
    let headers = res.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(res)
}

/// What a body guard needs: `http.max_body_bytes` and `limits.body_timeout`.
#[derive(Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
    /// The bound of a media send's form (`multipart/form-data` on `POST
    /// /api/sessions/{name}/messages`), bytes: see
    /// [`super::media_form_bytes`]. Every other body keeps `max_bytes`
    /// (plus what its handler grants: [`BodyAllowance`]).
    pub media_bytes: usize,
}

/// Bytes a handler adds to its body's bound once it knows what it is
/// reading: a campaign's form (`multipart/form-data` on `POST
/// /api/campaigns`) keeps `http.max_body_bytes` for its preamble, part
/// headers, CSV and other text parts, and gets its file's `[media]` limit
/// more when the `file` part begins. [`guard_body`] puts one in the
/// request's extensions for that form. Cheap to clone.
#[derive(Clone, Default)]
pub struct BodyAllowance(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl BodyAllowance {
    /// Lets the body have `bytes` more.
    pub fn grant(&self, bytes: usize) {
        // Only a bound, read by the same request's guard: no ordering
        // with other memory is needed. Never an error: the update always
        // gives a value.
        let _ = self
            .0
            .fetch_update(std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed, |b| Some(b.saturating_add(bytes)));
    }

    fn bytes(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Middleware for the whole app: bounds every request body that can have
/// one (not `GET`/`HEAD`, and not a WebSocket upgrade) in bytes and in
/// time. Every reader (JSON, multipart, raw) sees the bound, so multipart
/// part headers and preambles count too.
pub async fn guard_body(mut req: ServiceRequest, next: Next<impl MessageBody>) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let limits = req.app_data::<web::Data<BodyLimits>>().map(|l| *l.get_ref());
    let has_body = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let (Some(limits), true) = (limits, has_body) {
        let multipart = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"));
        let post = multipart && *req.method() == Method::POST;
        let max =
            if post && super::sessions::is_send_path(req.path()) { limits.media_bytes.max(limits.max_bytes) } else { limits.max_bytes };
        let allowance = (post && req.path().strip_prefix(super::API_PREFIX) == Some("/campaigns")).then(BodyAllowance::default);
        if let Some(a) = &allowance {
            actix_web::HttpMessage::extensions_mut(&req).insert(a.clone());
        }
        let inner = actix_web::HttpMessage::take_payload(&mut req);
        let deadline = Box::pin(tokio::time::sleep(limits.timeout));
        let guarded = BodyGuard { inner, seen: 0, max, allowance, deadline, done: false };
        let boxed: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(guarded);
        req.set_payload(actix_web::dev::Payload::from(boxed));
    }
    next.call(req).await
}

struct BodyGuard {
    inner: actix_web::dev::Payload,
    seen: usize,
    max: usize,
    allowance: Option<BodyAllowance>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

/// The io error a body that took too long ends with.
const SLOW_BODY: &str = "request body not received within limits.body_timeout";

impl Stream for BodyGuard {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.done = true;
            let e = std::io::Error::new(std::io::ErrorKind::TimedOut, SLOW_BODY);
            return Poll::Ready(Some(Err(PayloadError::Io(e))));
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen = self.seen.saturating_add(chunk.len());
                let max = self.max.saturating_add(self.allowance.as_ref().map_or(0, BodyAllowance::bytes));
                if self.seen > max {
                    self.done = true;
                    return Poll::Ready(Some(Err(PayloadError::Overflow)));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            other => other,
        }
    }
}

use std::future::Future as _;

/// The API error for a body that could not be read: 413 over the size,
/// 408 too slow, else 400.
pub fn payload_error(e: &PayloadError) -> ApiError {
    match e {
        PayloadError::Overflow => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body is larger than http.max_body_bytes"),
        PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, format!("{SLOW_BODY} ({e})"))
        }
        other => ApiError::bad_request(format!("reading the body: {other}")),
    }
}

/// Reads a whole request body of at most `max` bytes
/// (`http.max_body_bytes`). Errors: 413 past `max`, else as
/// [`payload_error`].
pub async fn read_limited(mut payload: web::Payload, max: usize) -> Result<Vec<u8>, ApiError> {
    use futures_util::StreamExt as _;
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| payload_error(&e))?;
        if body.len() + chunk.len() > max {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than the limit of {max} bytes (http.max_body_bytes)"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_methods_by_pattern() {
        let t = RouteTable::new(vec![
            ("get", "/api/sessions".into()),
            ("post", "/api/sessions".into()),
            ("delete", "/api/sessions/{name}".into()),
            ("get", "/api/sessions/{name}".into()),
        ]);
        assert_eq!(t.allowed("/api/sessions"), ["GET", "HEAD", "POST"]);
        assert_eq!(t.allowed("/api/sessions/acme"), ["DELETE", "GET", "HEAD"]);
        assert!(t.allowed("/api/nothing").is_empty());
    }
}
