//! Cluster mode: any node answers the API. A request that needs a
//! session's browser or its running campaign goes one hop to the node that
//! runs the session (holds its live lease), at that node's
//! `cluster.advertise` URL.
//!
//! Forwarded, when another node holds the session's live lease:
//! - `POST /api/sessions/{name}/start`, `/stop`, `/restart`, `/logout`,
//!   `/recover` and `DELETE /api/sessions/{name}`;
//! - `GET` (and `HEAD`) `/api/sessions/{name}/qr`, every format;
//! - `POST /api/sessions/{name}/messages`, text and media;
//! - `DELETE /api/sessions/{name}/queue` (it cancels the session's
//!   campaigns, which run on the owner);
//! - `POST /api/campaigns/{id}/start`, `/pause`, `/resume`, `/cancel` (the
//!   campaign's session decides);
//! - `POST /api/campaigns` with `start` true, JSON or form (the `session`
//!   it names decides). To read those two fields the body is read whole
//!   first, in cluster mode only (a form with a file: up to
//!   `http.max_body_bytes` plus the largest `[media]` limit).
//!
//! Everything else is answered where it arrives: reads come from the
//! database, and what only the store needs is done there.
//!
//! The forwarded request has the same method, path, query, body,
//! `Content-Type` and `Authorization` (every node must share one token),
//! plus `X-Wasup-Forwarded: <this node>`; a request that carries that
//! header is answered where it arrives, never forwarded again (one hop,
//! no loops). The owner's answer goes back as it is (status, body,
//! `Content-Type`, `Retry-After`, `Allow`), with `X-Wasup-Node: <owner>`.
//!
//! When no node holds a live lease on the session:
//! - a QR, a send or a logout of a session that should run answers 503
//!   with `Retry-After` (`lease_ttl / 3`, rounded up): a node takes it at
//!   its next placement;
//! - everything else is carried out here: the Supervisor records a start,
//!   stop, restart, recover or delete in the store (placement runs it
//!   where there is room), a logout answers 503 with `Retry-After`, and a
//!   campaign's record changes in the store for its next owner.
//!
//! The owner not answering: 503 with `Retry-After` if it did not take the
//! connection (nothing was done; a dead node's lease expires within
//! `lease_ttl`), 504 after [`ClusterApi::forward_timeout`] and 502 if the
//! connection broke (the request may have been carried out there).

use std::pin::Pin;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::{Error, HttpMessage as _, HttpResponse, ResponseError as _};
use futures_util::{Stream, StreamExt as _};

use super::error::ApiError;
use super::nodes::ClusterApi;
use super::AppState;
use crate::session_state::validate_name;
use crate::store::Desired;

/// The header a forwarded request carries: the forwarding node's name.
pub const FORWARDED: &str = "x-wasup-forwarded";

/// The header of a forwarded answer: the node that answered.
pub const ANSWERED_BY: &str = "x-wasup-node";

/// The most bytes of an owner's answer passed back (a QR image, a view).
const MAX_ANSWER_BYTES: u64 = 16 * 1024 * 1024;

/// What a request is about, for the forwarding decision.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// A session by name.
    Session(String),
    /// A campaign by id: its session decides.
    Campaign(String),
    /// `POST /api/campaigns`: forwarded only with `start`, by the session
    /// in the body.
    NewCampaign,
}

/// A route that may be forwarded: its target, and whether it needs the
/// browser (with no owner: 503 rather than carried out here).
#[derive(Debug, PartialEq, Eq)]
struct Route {
    target: Target,
    browser: bool,
}

/// The routes listed in the module docs; `None` for every other.
fn classify(method: &Method, path: &str) -> Option<Route> {
    let rest = path.strip_prefix(super::API_PREFIX)?;
    let parts: Vec<&str> = rest.split('/').skip(1).collect();
    let session =
        |name: &str, browser: bool| validate_name(name).ok().map(|()| Route { target: Target::Session(name.to_string()), browser });
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["sessions", name, "start" | "stop" | "restart" | "recover"]) => session(name, false),
        ("POST", ["sessions", name, "logout" | "messages"]) => session(name, true),
        ("GET" | "HEAD", ["sessions", name, "qr"]) => session(name, true),
        ("DELETE", ["sessions", name]) | ("DELETE", ["sessions", name, "queue"]) => session(name, false),
        ("POST", ["campaigns", id, "start" | "pause" | "resume" | "cancel"]) if !id.is_empty() => {
            Some(Route { target: Target::Campaign(id.to_string()), browser: false })
        }
        ("POST", ["campaigns"]) => Some(Route { target: Target::NewCampaign, browser: false }),
        _ => None,
    }
}

/// Where a request is answered.
enum Decision {
    Here,
    /// At this node (name, advertised URL).
    Forward(String, String),
}

/// Middleware for the `/api` scope, inside the token check: forwards what
/// the module docs list; passes everything else on.
pub async fn forward(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let cluster = req.app_data::<web::Data<AppState>>().and_then(|s| s.cluster.clone());
    let (Some(cluster), false) = (cluster, req.headers().contains_key(FORWARDED)) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let Some(route) = classify(req.method(), req.path()) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let mut body: Option<Vec<u8>> = None;
    let session = match route.target {
        Target::Session(name) => Some(name),
        Target::Campaign(id) => match campaign_session(&state, id).await {
            Ok(session) => session,
            Err(e) => return Ok(answer(req, e.error_response())),
        },
        Target::NewCampaign => {
            let read = read_campaign_body(&mut req, &state).await;
            match read {
                Ok((bytes, wanted)) => {
                    body = Some(bytes);
                    wanted
                }
                Err(e) => return Ok(answer(req, e.error_response())),
            }
        }
    };
    let decision = match session {
        Some(session) => decide(&state, &cluster, session, route.browser).await,
        None => Ok(Decision::Here),
    };
    let (node, advertise) = match decision {
        Ok(Decision::Here) => {
            if let Some(bytes) = body {
                replay(&mut req, bytes);
            }
            return Ok(next.call(req).await?.map_into_left_body());
        }
        Ok(Decision::Forward(node, advertise)) => (node, advertise),
        Err(e) => return Ok(answer(req, e.error_response())),
    };
    let body = match body {
        Some(bytes) => bytes,
        None => match read_body(&mut req).await {
            Ok(bytes) => bytes,
            Err(e) => return Ok(answer(req, e.error_response())),
        },
    };
    let res = send(&cluster, &req, &node, &advertise, body).await.unwrap_or_else(|e| e.error_response());
    Ok(answer(req, res))
}

fn answer<B>(req: ServiceRequest, res: HttpResponse) -> ServiceResponse<EitherBody<B>> {
    req.into_response(res).map_into_right_body()
}

/// The session of campaign `id`; `None` for no such campaign (answered
/// here: 404).
async fn campaign_session(state: &AppState, id: String) -> Result<Option<String>, ApiError> {
    let store = state.store.clone();
    let record = web::block(move || store.campaign(&id)).await.map_err(|e| ApiError::internal(format!("reading the campaign: {e}")))??;
    Ok(record.map(|r| r.session))
}

/// Where `session`'s request is answered: at the node holding its live
/// lease if that is another node; here if this node runs it, or if no
/// node does and the request can be carried out on the store. A request
/// that needs the browser of a session that should run and that no node
/// runs: 503 with `Retry-After`.
///
/// Errors: 503, the database did not answer.
async fn decide(state: &AppState, cluster: &ClusterApi, session: String, browser: bool) -> Result<Decision, ApiError> {
    let (pg, ttl_ms, store, name) = (cluster.pg().clone(), cluster.ttl_ms(), state.store.clone(), session.clone());
    let me = cluster.node.clone();
    let held_here = state.store.fences().is_some_and(|f| f.generation(&session).is_some());
    let read = web::block(move || -> Result<_, crate::store::StoreError> {
        let view = crate::cluster::read_view(&pg, ttl_ms)?;
        // A live lease in this node's name that this process does not
        // hold was left by its previous process: nobody runs it.
        let owner = view.owner(&name).filter(|l| l.node != me || held_here).map(|l| l.node.clone());
        let target = owner.as_ref().filter(|o| **o != me).map(|o| {
            let advertise = view.node(o).map(|n| n.advertise.clone());
            (o.clone(), advertise)
        });
        let wanted = match (&owner, browser) {
            (None, true) => store.session(&name)?.map(|r| r.desired == Desired::Running),
            _ => None,
        };
        Ok((owner, target, wanted))
    })
    .await
    .map_err(|e| ApiError::internal(format!("reading the cluster: {e}")))??;
    match read {
        (_, Some((node, Some(advertise))), _) => Ok(Decision::Forward(node, advertise)),
        (_, Some((node, None)), _) => Err(ApiError::unavailable(
            format!("node {node:?} runs session {session:?} but is not in the nodes table; try again shortly"),
            cluster.retry_after_s(),
        )),
        (None, None, Some(true)) => {
            let retry = cluster.retry_after_s();
            Err(ApiError::unavailable(
                format!("no node runs session {session:?} now (a node takes it at its next placement); try again in {retry} s"),
                retry,
            ))
        }
        _ => Ok(Decision::Here),
    }
}

/// Reads a campaign creation's body whole and whether it asks to be
/// forwarded: the `session` it names when `start` is true. A body that
/// cannot be read that way is answered here (with the handler's own
/// message).
///
/// Errors: the body could not be read (413 past its bound, 408 too slow).
async fn read_campaign_body(req: &mut ServiceRequest, state: &AppState) -> Result<(Vec<u8>, Option<String>), ApiError> {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let form = content_type.to_ascii_lowercase().starts_with("multipart/form-data");
    if form {
        // The handler grants the file's own limit when its part begins;
        // the body read whole here needs the largest one up front.
        let allowance = req.extensions().get::<super::conventions::BodyAllowance>().cloned();
        if let Some(allowance) = allowance {
            allowance.grant(super::media_form_bytes(&state.config));
        }
    }
    let body = read_body(req).await?;
    let wanted = if form {
        form_fields(req.headers(), &body).await
    } else {
        serde_json::from_slice::<CampaignProbe>(&body).ok().map(|p| (p.session, p.start))
    };
    Ok((body, wanted.filter(|(_, start)| *start).map(|(session, _)| session)))
}

/// The two fields of a JSON campaign creation the decision needs; the
/// others are skipped unread.
#[derive(serde::Deserialize)]
struct CampaignProbe {
    session: String,
    #[serde(default)]
    start: bool,
}

/// `session` and `start` of a campaign creation's form (`start` read as
/// the handler reads it: `true`, `1` or `on`).
async fn form_fields(headers: &header::HeaderMap, body: &[u8]) -> Option<(String, bool)> {
    let bytes = Bytes::copy_from_slice(body);
    let mut form = actix_multipart::Multipart::new(headers, futures_util::stream::iter([Ok::<_, PayloadError>(bytes)]));
    let (mut session, mut start) = (None, false);
    while let Some(field) = form.next().await {
        let mut field = field.ok()?;
        let name = field.name().unwrap_or("").to_string();
        let mut value = Vec::new();
        while let Some(chunk) = field.next().await {
            if name == "session" || name == "start" {
                value.extend_from_slice(&chunk.ok()?);
            }
        }
        match name.as_str() {
            "session" => session = Some(String::from_utf8(value).ok()?),
            "start" => start = matches!(String::from_utf8_lossy(&value).trim(), "true" | "1" | "on"),
            _ => {}
        }
    }
    Some((session?, start))
}

/// The request's body, whole (bounded as every body is:
/// [`super::conventions::guard_body`]).
///
/// Errors: as [`super::conventions::payload_error`].
async fn read_body(req: &mut ServiceRequest) -> Result<Vec<u8>, ApiError> {
    let mut payload = req.take_payload();
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        body.extend_from_slice(&chunk.map_err(|e| super::conventions::payload_error(&e))?);
    }
    Ok(body)
}

/// Gives the request its body back, read whole, for the handler.
fn replay(req: &mut ServiceRequest, body: Vec<u8>) {
    let chunks: Vec<Result<Bytes, PayloadError>> = if body.is_empty() { Vec::new() } else { vec![Ok(Bytes::from(body))] };
    let stream: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(futures_util::stream::iter(chunks));
    req.set_payload(actix_web::dev::Payload::from(stream));
}

/// What came back from the owner.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

/// Sends the request to `node` at `advertise` and answers as it did.
///
/// Errors: 503 with `Retry-After` (no connection: nothing was done), 504
/// (no answer in time), 502 (the connection broke, or an answer over
/// [`MAX_ANSWER_BYTES`]).
async fn send(cluster: &ClusterApi, req: &ServiceRequest, node: &str, advertise: &str, body: Vec<u8>) -> Result<HttpResponse, ApiError> {
    let path = req.uri().path_and_query().map_or_else(|| req.path().to_string(), |p| p.as_str().to_string());
    let url = format!("{}{path}", advertise.trim_end_matches('/'));
    let method = req.method().as_str().to_string();
    let passed = [header::CONTENT_TYPE, header::AUTHORIZATION, header::ACCEPT];
    let headers: Vec<(String, String)> = passed
        .iter()
        .filter_map(|name| Some((name.as_str().to_string(), req.headers().get(name)?.to_str().ok()?.to_string())))
        .chain([(FORWARDED.to_string(), cluster.node.clone())])
        .collect();
    tracing::debug!(node = %node, method = %method, path = %req.path(), event = "cluster.forward", "forwarding the request to the session's node");
    let agent = cluster.agent.clone();
    let sent = web::block(move || {
        let mut request = agent.request(&method, &url);
        for (name, value) in &headers {
            request = request.set(name, value);
        }
        let result = if body.is_empty() && matches!(method.as_str(), "GET" | "HEAD" | "DELETE") {
            request.call()
        } else {
            request.send_bytes(&body)
        };
        let resp = match result {
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => resp,
            Err(ureq::Error::Transport(t)) => return Err(Box::new(t)),
        };
        let kept = [("content-type", header::CONTENT_TYPE), ("retry-after", header::RETRY_AFTER), ("allow", header::ALLOW)];
        let headers = kept.iter().filter_map(|(name, _)| Some((*name, resp.header(name)?.to_string()))).collect();
        let status = resp.status();
        let mut body = Vec::new();
        let read = std::io::Read::read_to_end(&mut std::io::Read::take(resp.into_reader(), MAX_ANSWER_BYTES + 1), &mut body);
        Ok((status, headers, body, read.err().map(|e| e.to_string())))
    })
    .await
    .map_err(|e| ApiError::internal(format!("forwarding the request: {e}")))?;
    let (status, headers, body, read_error) = match sent {
        Ok(answer) => answer,
        Err(t) => return Err(transport_error(cluster, node, &t)),
    };
    if let Some(e) = read_error {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("node {node:?} broke off its answer ({e}); the request may have been carried out there"),
        ));
    }
    if body.len() as u64 > MAX_ANSWER_BYTES {
        return Err(ApiError::new(StatusCode::BAD_GATEWAY, format!("node {node:?} answered more than {MAX_ANSWER_BYTES} bytes")));
    }
    Ok(build(Answer { status, headers, body }, node))
}

/// The owner's answer as this node's.
fn build(answer: Answer, node: &str) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut res = HttpResponse::build(status);
    for (name, value) in answer.headers {
        // A value that is not a valid header (it came through ureq as a
        // string) is left out: the status and body still say what happened.
        if let Ok(value) = HeaderValue::from_str(&value) {
            res.insert_header((name, value));
        }
    }
    if let Ok(value) = HeaderValue::from_str(node) {
        res.insert_header((ANSWERED_BY, value));
    }
    res.body(answer.body)
}

/// What a forward that got no answer means for the client.
fn transport_error(cluster: &ClusterApi, node: &str, t: &ureq::Transport) -> ApiError {
    let timed_out = std::error::Error::source(t)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|e| matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock));
    match t.kind() {
        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns => {
            let retry = cluster.retry_after_s();
            ApiError::unavailable(
                format!(
                    "node {node:?} runs the session but does not answer ({}); nothing was done; try again in {retry} s (a node that is down loses its sessions within cluster.lease_ttl)",
                    t.kind()
                ),
                retry,
            )
        }
        _ if timed_out => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "node {node:?} did not answer within {} s; the request may have been carried out there",
                cluster.forward_timeout.as_secs()
            ),
        ),
        kind => ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the connection to node {node:?} failed ({kind}); the request may have been carried out there"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Method, path: &str) -> Option<(Target, bool)> {
        classify(&method, path).map(|r| (r.target, r.browser))
    }

    #[test]
    fn exactly_the_listed_routes_are_forwarded() {
        let s = |n: &str| Target::Session(n.into());
        for action in ["start", "stop", "restart", "recover"] {
            assert_eq!(route(Method::POST, &format!("/api/sessions/acme/{action}")), Some((s("acme"), false)), "{action}");
        }
        assert_eq!(route(Method::POST, "/api/sessions/acme/logout"), Some((s("acme"), true)));
        assert_eq!(route(Method::POST, "/api/sessions/acme/messages"), Some((s("acme"), true)));
        assert_eq!(route(Method::GET, "/api/sessions/acme/qr"), Some((s("acme"), true)));
        assert_eq!(route(Method::HEAD, "/api/sessions/acme/qr"), Some((s("acme"), true)));
        assert_eq!(route(Method::DELETE, "/api/sessions/acme"), Some((s("acme"), false)));
        assert_eq!(route(Method::DELETE, "/api/sessions/acme/queue"), Some((s("acme"), false)));
        for action in ["start", "pause", "resume", "cancel"] {
            assert_eq!(
                route(Method::POST, &format!("/api/campaigns/cmp_0123456789abcdef/{action}")),
                Some((Target::Campaign("cmp_0123456789abcdef".into()), false))
            );
        }
        assert_eq!(route(Method::POST, "/api/campaigns"), Some((Target::NewCampaign, false)));
        // Reads and what only the store needs are answered where they arrive.
        for (method, path) in [
            (Method::GET, "/api/sessions"),
            (Method::POST, "/api/sessions"),
            (Method::GET, "/api/sessions/acme"),
            (Method::GET, "/api/sessions/acme/history"),
            (Method::GET, "/api/sessions/acme/queue"),
            (Method::GET, "/api/sessions/acme/opt-outs"),
            (Method::POST, "/api/sessions/acme/opt-outs"),
            (Method::GET, "/api/campaigns"),
            (Method::GET, "/api/campaigns/cmp_0123456789abcdef"),
            (Method::GET, "/api/campaigns/cmp_0123456789abcdef/recipients"),
            (Method::GET, "/api/nodes"),
            (Method::POST, "/api/nodes/node-a/drain"),
            (Method::GET, "/api/sessions/acme/messages"),
            (Method::POST, "/api/sessions/acme/qr"),
            (Method::POST, "/sessions/acme/start"),
        ] {
            assert_eq!(route(method.clone(), path), None, "{method} {path}");
        }
        // An invalid name is answered here (400).
        assert_eq!(route(Method::POST, "/api/sessions/a%20b/start"), None);
        assert_eq!(route(Method::POST, "/api/sessions//start"), None);
    }

    #[actix_web::test]
    async fn a_form_says_its_session_and_start() {
        let boundary = "b0undary";
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"csv\"; filename=\"a.csv\"\r\nContent-Type: text/csv\r\n\r\nphone\n+4915112345678\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"session\"\r\n\r\nacme\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"start\"\r\n\r\ntrue\r\n--{boundary}--\r\n"
        );
        let mut headers = header::HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}")).unwrap());
        assert_eq!(form_fields(&headers, body.as_bytes()).await, Some(("acme".to_string(), true)));
        let draft = body.replace("\r\n\r\ntrue\r\n", "\r\n\r\nfalse\r\n");
        assert_eq!(form_fields(&headers, draft.as_bytes()).await, Some(("acme".to_string(), false)));
        assert_eq!(form_fields(&headers, b"not a form").await, None);
        let json: CampaignProbe =
            serde_json::from_str(r#"{"name": "x", "session": "acme", "recipients": [{"phone": "1"}], "start": true}"#).unwrap();
        assert_eq!((json.session.as_str(), json.start), ("acme", true));
    }
}
