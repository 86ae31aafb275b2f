//! `GET /api/openapi.json`: the OpenAPI document of this API, generated with
//! utoipa from the `#[utoipa::path]` annotations on the handlers.
//!
//! It stays in step with the routes by construction:
//! - each module declares its routes once with `declare_routes!`, which
//!   gives both the function that registers them and their `(method, path)`
//!   list;
//! - [`ApiDoc`] lists every annotated handler, and the unit test below fails
//!   unless the document's operations are exactly the registered routes;
//! - the bearer security and the 401 answer are added to every operation
//!   under [`API_PREFIX`] by [`BearerUnderApi`], the same prefix the token
//!   middleware wraps.
//!
//! The debug-only fault-injection routes (`_fault`) are registered outside
//! `declare_routes!` and stay out of the document.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::API_PREFIX;

declare_routes! {
    pub fn routes;
    get "/openapi.json" => document,
}

/// The name of the bearer security scheme in the document.
const BEARER: &str = "bearer";

/// The document: every path of the API (the fault-injection routes aside).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "wasup",
        description = "Keeps WhatsApp Web sessions alive and sends paced campaigns through them. \
            `GET /health`, `GET /metrics` and `GET /dashboard` need no token; every route under `/api` \
            needs `Authorization: Bearer <token>`. Errors are JSON, `{\"error\": \"<what was wrong>\"}`. \
            Times (`*_ms`) are Unix epoch milliseconds.",
    ),
    paths(
        super::health,
        super::metrics::metrics,
        super::dashboard::page,
        document,
        super::sessions::list,
        super::sessions::create,
        super::sessions::get,
        super::sessions::delete,
        super::sessions::start,
        super::sessions::stop,
        super::sessions::restart,
        super::sessions::logout,
        super::sessions::recover,
        super::sessions::qr,
        super::sessions::send,
        super::sessions::history,
        super::numbers::list,
        super::numbers::add,
        super::numbers::remove,
        super::numbers::pacing,
        super::campaigns::list,
        super::campaigns::create,
        super::campaigns::get,
        super::campaigns::start,
        super::campaigns::pause,
        super::campaigns::resume,
        super::campaigns::cancel,
        super::campaigns::recipients,
        super::campaigns::report,
        super::campaigns::queue,
        super::campaigns::clear_queue,
        super::events::sse,
        super::events::ws,
        super::webhooks::list,
        super::webhooks::dead_letters,
        super::webhooks::replay,
        super::webhooks::delete,
        super::nodes::list,
        super::nodes::drain,
        super::nodes::undrain,
    ),
    components(schemas(crate::events::Event, super::error::ErrorBody)),
    modifiers(&BearerUnderApi),
    tags(
        (name = "daemon", description = "Liveness, metrics, the dashboard and this document"),
        (name = "sessions", description = "WhatsApp Web sessions: create, control, pair by QR, send"),
        (name = "campaigns", description = "Paced, crash-safe campaigns and a session's queue"),
        (name = "events", description = "Live events"),
        (name = "webhooks", description = "Durable, signed webhooks: the hooks, their outbox and dead letters"),
        (name = "cluster", description = "Cluster mode (PostgreSQL): the nodes, their sessions and heartbeats; drain and undrain"),
    ),
)]
pub struct ApiDoc;

/// Paths behind the token: everything under [`API_PREFIX`] (the scope
/// `auth::require_token` wraps) and `/metrics` (by default:
/// `http.metrics_public` opts out).
fn needs_token(path: &str) -> bool {
    path.starts_with(&format!("{API_PREFIX}/")) || path == "/metrics"
}

/// Declares the bearer scheme and puts it, with its 401 answer, on every
/// operation that [`needs_token`].
struct BearerUnderApi;

impl Modify for BearerUnderApi {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The API token: `WASUP_TOKEN`, or the content of `http.token_file` (default `<state.dir>/token`)."))
                    .build(),
            ),
        );
        let unauthorized = ResponseBuilder::new()
            .description("Missing or invalid bearer token")
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
            .build();
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !needs_token(path) {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
                operation.responses.responses.entry("401".into()).or_insert_with(|| unauthorized.clone().into());
            }
        }
    }
}

/// This document
///
/// The OpenAPI document of this API.
#[utoipa::path(
    get,
    operation_id = "openapi",
    path = "/api/openapi.json",
    tag = "daemon",
    responses((status = 200, description = "The OpenAPI document", body = Object)),
)]
async fn document() -> HttpResponse {
    static DOCUMENT: OnceLock<Result<String, String>> = OnceLock::new();
    match DOCUMENT.get_or_init(|| ApiDoc::openapi().to_json().map_err(|e| e.to_string())) {
        Ok(json) => HttpResponse::Ok().content_type("application/json").body(json.clone()),
        Err(e) => {
            use actix_web::ResponseError as _;
            super::error::ApiError::internal(format!("cannot render the OpenAPI document: {e}")).error_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

    fn document() -> Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    /// `(method, path, operation)` of every operation in the document.
    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut all = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    all.push((method.to_string(), path.clone(), op.clone()));
                }
            }
        }
        all
    }

    /// The sync check: a route registered without an annotated handler in
    /// [`ApiDoc`], or a documented operation that no route serves, fails here.
    #[test]
    fn the_document_has_exactly_the_registered_routes() {
        let registered: BTreeSet<(String, String)> = super::super::registered_routes().into_iter().collect();
        assert_eq!(registered.len(), super::super::registered_routes().len(), "a route is registered twice");
        let documented: BTreeSet<(String, String)> = operations(&document()).into_iter().map(|(m, p, _)| (m, p)).collect();
        let missing: Vec<_> = registered.difference(&documented).collect();
        assert!(missing.is_empty(), "registered but not in the OpenAPI document (annotate the handler and list it in ApiDoc): {missing:?}");
        let stale: Vec<_> = documented.difference(&registered).collect();
        assert!(stale.is_empty(), "in the OpenAPI document but not registered: {stale:?}");
        assert!(registered.iter().all(|(_, p)| !p.contains("_fault")));
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = document();
        let mut seen = BTreeSet::new();
        for (method, path, op) in operations(&doc) {
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId")).to_string();
            assert!(seen.insert(id.clone()), "operationId {id:?} is used twice ({method} {path})");
        }
    }

    #[test]
    fn every_api_operation_needs_the_bearer_token_and_nothing_else_does() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        assert_eq!(doc["components"]["securitySchemes"][BEARER]["scheme"], "bearer");
        for (method, path, op) in operations(&doc) {
            let under_api = needs_token(&path);
            let security = op.get("security").cloned().unwrap_or(Value::Null);
            if under_api {
                assert_eq!(security, serde_json::json!([{BEARER: []}]), "{method} {path}");
                assert!(op["responses"].get("401").is_some(), "{method} {path} lacks its 401");
            } else {
                assert!(security.is_null(), "{method} {path} needs no token");
            }
        }
    }

    /// Every 4xx and 5xx answer is documented with the `{"error": …}` body.
    #[test]
    fn every_error_answer_has_the_error_schema() {
        let doc = document();
        for (method, path, op) in operations(&doc) {
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.keys().any(|s| s.starts_with('2') || s == "101"), "{method} {path} has no success answer");
            for (status, response) in responses {
                if !(status.starts_with('4') || status.starts_with('5')) {
                    continue;
                }
                if (path.as_str(), status.as_str()) == ("/health", "503") {
                    // The one documented exception: degraded health answers
                    // with the Health body, `status` and `reasons`.
                    let schema = response["content"]["application/json"]["schema"]["$ref"].as_str().unwrap_or_default();
                    assert!(schema.ends_with("/Health"), "{response}");
                    continue;
                }
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                let name = schema.as_str().and_then(|r| r.strip_prefix("#/components/schemas/"));
                let name = name.unwrap_or_else(|| panic!("{method} {path} {status}: no error schema: {response}"));
                let required = &doc["components"]["schemas"][name]["required"];
                assert!(required.as_array().unwrap().contains(&Value::from("error")), "{method} {path} {status}: {name} lacks error");
            }
        }
    }

    /// The documented multipart form has exactly the parts the handler reads.
    #[test]
    fn the_campaign_form_documents_every_part() {
        let doc = document();
        let form = &doc["components"]["schemas"]["NewCampaignForm"]["properties"];
        let documented: BTreeSet<&str> = form.as_object().unwrap().keys().map(String::as_str).collect();
        let read: BTreeSet<&str> = super::super::campaigns::FORM_PARTS.into_iter().collect();
        assert_eq!(documented, read);
    }
}
