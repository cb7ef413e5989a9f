//! The web console (`web/`), served at `/` from the bundle embedded at compile time
//! (`build.rs` includes every file of the committed `web/dist/`), so the binary alone serves
//! it — no npm, no files next to it.
//!
//! Only the console's own paths are answered here, and only when the API has no route for
//! them (the dispatcher asks on its REST not-found path): the hashed files under `/assets/`
//! (cached for a year, immutable), the other files of the bundle and — the SPA fallback —
//! `index.html` for `/` and the console's route prefixes, read from the bundle's
//! `console-routes.txt` (written by the build from `web/src/router.ts`), never cached
//! without revalidation. `/v1/*`, `/openapi.json`, `/metrics`, `/healthz`, `/readyz` and
//! every gRPC, gRPC-web and Connect path are never matched. Every answer carries a
//! Content-Security-Policy that allows this origin only.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::LazyLock;

use axum::body::Body;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

mod assets {
    include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));
}

/// This origin only: scripts, styles, images, fonts and calls (`connect-src` covers the
/// gRPC-web / Connect calls and the CSV download). No inline scripts or styles.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";
const ROUTES_FILE: &str = "/console-routes.txt";

struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: HeaderValue,
}

struct Console {
    files: HashMap<&'static str, Asset>,
    /// First path segments of the console's routes (`/catalog`, `/staff`, …).
    routes: Vec<String>,
}

static CONSOLE: LazyLock<Console> = LazyLock::new(|| {
    let mut files = HashMap::new();
    let mut routes = Vec::new();
    for (path, body) in assets::FILES {
        if *path == ROUTES_FILE {
            routes = String::from_utf8_lossy(body)
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with('/') && l.len() > 1)
                .map(str::to_string)
                .collect();
            continue;
        }
        let mut h = DefaultHasher::new();
        body.hash(&mut h);
        let etag = HeaderValue::from_str(&format!("\"{:016x}\"", h.finish()))
            .unwrap_or(HeaderValue::from_static("\"0\""));
        files.insert(
            *path,
            Asset {
                body,
                content_type: content_type(path),
                etag,
            },
        );
    }
    Console { files, routes }
});

/// Whether the bundle was embedded (false when `web/dist/` was missing at build time).
pub fn embedded() -> bool {
    CONSOLE.files.contains_key("/index.html")
}

/// The console's answer to `method path`, or `None` when the path is not the console's.
pub fn handle(method: &Method, path: &str, headers: &HeaderMap) -> Option<Response<Body>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let console = &*CONSOLE;
    if path != "/index.html"
        && let Some(asset) = console.files.get(path)
    {
        let cache = if path.starts_with("/assets/") {
            IMMUTABLE
        } else {
            REVALIDATE
        };
        return Some(respond(asset, cache, headers));
    }
    if !is_route(&console.routes, path) {
        return None;
    }
    Some(match console.files.get("/index.html") {
        Some(index) => respond(index, REVALIDATE, headers),
        None => not_built(),
    })
}

fn is_route(routes: &[String], path: &str) -> bool {
    path == "/"
        || path == "/index.html"
        || routes.iter().any(|r| {
            path.strip_prefix(r.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
}

fn respond(asset: &Asset, cache: &'static str, req: &HeaderMap) -> Response<Body> {
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == asset.etag.as_bytes());
    let mut resp = if fresh {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(Body::from(asset.body))
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::ETAG, asset.etag.clone());
    secure(h);
    resp
}

fn secure(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn not_built() -> Response<Body> {
    let mut r = Response::new(Body::from(
        "The web console was not built into this binary: run `cd web && npm ci && npm run build`, then rebuild.\n",
    ));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    secure(r.headers_mut());
    r
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "webmanifest" => "application/json",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Vec<String> {
        ["/catalog", "/staff", "/products"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn routes_match_whole_segments() {
        let r = routes();
        assert!(is_route(&r, "/"));
        assert!(is_route(&r, "/catalog"));
        assert!(is_route(&r, "/staff/products/new"));
        assert!(!is_route(&r, "/catalogue"));
        assert!(!is_route(&r, "/v1/products"));
        assert!(!is_route(&r, "/openapi.json"));
        assert!(!is_route(
            &r,
            "/stockmesh.products.v1.ProductService/GetProduct"
        ));
    }

    #[test]
    fn api_paths_are_not_the_consoles() {
        let h = HeaderMap::new();
        for path in [
            "/v1/products",
            "/metrics",
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/nope",
        ] {
            assert!(handle(&Method::GET, path, &h).is_none(), "{path}");
        }
        assert!(handle(&Method::POST, "/", &h).is_none());
    }

    #[test]
    fn types_by_extension() {
        assert_eq!(
            content_type("/assets/index-abc.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("/favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("/index.html"), "text/html; charset=utf-8");
    }

    #[test]
    fn the_bundle_is_embedded_with_its_routes() {
        assert!(embedded(), "web/dist/index.html was not embedded");
        assert!(CONSOLE.routes.iter().any(|r| r == "/catalog"));
        let resp = handle(&Method::GET, "/staff/orders", &HeaderMap::new()).unwrap();
        assert_eq!(resp.headers()[header::CACHE_CONTROL], REVALIDATE);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }
}
