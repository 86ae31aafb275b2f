//! The dashboard: `GET /dashboard`, one static page (HTML, CSS and
//! JavaScript in `dashboard.html`, embedded at build time; no external
//! resources, no build step).
//!
//! The page itself needs no token: it holds no data. It asks for the API
//! token once, keeps it only in a JavaScript variable (never in storage,
//! cookies or a URL) and sends it as `Authorization: Bearer …` on every
//! `fetch` to `/api`. It shows the sessions (state in green, yellow or red,
//! the QR while `SCAN_QR` with its string in `data-qr-value`, a 24 h state
//! timeline from `GET /api/sessions/{name}/history`, and the view's
//! `objectives` when it has them), the campaigns with their progress and
//! sends per hour (`sends_per_hour` of `GET /api/campaigns/{id}`), and the
//! live events of `GET /api/events`, read with `fetch` because
//! `EventSource` cannot send headers. It creates sessions (JSON) and
//! campaigns (the multipart CSV upload, built as `FormData`), and starts,
//! pauses, resumes and cancels campaigns; an API refusal is shown with its
//! `error` (and `rows`). Charts are inline SVG the script builds with
//! `createElementNS`: no library, no markup parsed.
//!
//! Every response carries a fresh nonce in a strict Content-Security-Policy:
//! only the page's own inline script and style run, images come from the
//! daemon or from `blob:` (the QR, fetched with the token), and the page
//! talks only to its own origin.

use actix_web::HttpResponse;
use base64::Engine as _;
use rand::RngCore as _;

/// The page; `{{NONCE}}` marks where each response's nonce goes.
const PAGE: &str = include_str!("dashboard.html");
const NONCE_MARK: &str = "{{NONCE}}";

/// The Content-Security-Policy for a response with `nonce`.
fn csp(nonce: &str) -> String {
    format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self' blob:; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// The dashboard
///
/// One HTML page; it asks for the API token once and keeps it only in its
/// memory. Needs no token itself.
#[utoipa::path(
    get,
    operation_id = "dashboard",
    path = "/dashboard",
    tag = "daemon",
    responses((status = 200, description = "The page", body = String, content_type = "text/html")),
)]
pub async fn page() -> HttpResponse {
    let mut bytes = [0u8; 18];
    rand::thread_rng().fill_bytes(&mut bytes);
    let nonce = base64::engine::general_purpose::STANDARD.encode(bytes);
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", csp(&nonce)))
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header(("X-Frame-Options", "DENY"))
        .body(PAGE.replace(NONCE_MARK, &nonce))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn serves_the_page_with_a_fresh_nonce_and_strict_headers() {
        let first = page().await;
        assert_eq!(first.status(), 200);
        let header = |r: &HttpResponse, name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert_eq!(header(&first, "content-type"), "text/html; charset=utf-8");
        assert_eq!(header(&first, "cache-control"), "no-store");
        let policy = header(&first, "content-security-policy");
        assert!(policy.starts_with("default-src 'none'; script-src 'nonce-"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        let nonce = policy.split("'nonce-").nth(1).and_then(|s| s.split('\'').next()).unwrap().to_string();

        let body = actix_web::body::to_bytes(first.into_body()).await.unwrap();
        let html = std::str::from_utf8(&body).unwrap();
        assert!(!html.contains(NONCE_MARK));
        assert!(html.contains(&format!("<script nonce=\"{nonce}\">")));
        assert!(html.contains(&format!("<style nonce=\"{nonce}\">")));

        let second = page().await;
        assert!(!header(&second, "content-security-policy").contains(&nonce), "a nonce is used once");
    }

    /// The page never writes data as markup and never persists the token.
    #[test]
    fn the_page_uses_no_markup_sinks_or_storage() {
        for sink in
            ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "localStorage", "sessionStorage", "document.cookie", "eval("]
        {
            assert!(!PAGE.contains(sink), "dashboard.html uses {sink}");
        }
    }
}
