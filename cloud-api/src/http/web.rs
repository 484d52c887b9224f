//! The access-graph web page: a static page compiled into the binary. It asks for an org API
//! token and reads the JSON API with it like any other client, so the assets themselves are
//! public and carry no data. Everything it needs is served from here; nothing comes from a CDN.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");
const FAVICON_SVG: &str = include_str!("../../web/favicon.svg");

/// Only our own scripts, styles and API; no inline code, no framing, no forms posted elsewhere.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route(
            "/assets/app.js",
            get(|| async { asset("application/javascript; charset=utf-8", APP_JS) }),
        )
        .route("/assets/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/assets/favicon.svg", get(|| async { asset("image/svg+xml", FAVICON_SVG) }))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // Small and compiled in: revalidate so a new release's page never runs against old code.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets() {
        for link in ["/assets/app.js", "/assets/app.css", "/assets/favicon.svg"] {
            assert!(INDEX_HTML.contains(link), "index.html refers to {link}");
        }
        assert!(
            !INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"),
            "no external resources"
        );
        assert!(
            !INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style="),
            "no inline code, which the CSP would block"
        );
        let js = APP_JS.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !js.contains("http://") && !js.contains("https://"),
            "the script talks to its own origin only"
        );
        HeaderValue::from_static(CONTENT_SECURITY_POLICY);
    }
}
