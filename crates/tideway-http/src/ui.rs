//! `GET /admin/...`: the admin UI, built from `admin/` and embedded in the binary, so a
//! `cargo install` user gets it without Node.js.

use http::{HeaderValue, StatusCode, header};
use rust_embed::RustEmbed;

use crate::{
    error::{ApiError, ErrorCode},
    response::{Response, full},
};

/// The built admin app (`admin/dist`, committed; `npm run build` in `admin/` makes it).
#[derive(RustEmbed)]
#[folder = "../../admin/dist"]
struct Assets;

/// Serves `path` (everything after `/admin`): a file of the build, or the app's
/// `index.html` for its own routes.
pub(crate) fn serve(path: &str) -> Result<Response, ApiError> {
    if path.is_empty() {
        let mut response = full(StatusCode::PERMANENT_REDIRECT, "text/plain", "");
        response
            .headers_mut()
            // Relative: behind a proxy serving the gateway under a prefix, `<prefix>/admin`
            // goes to `<prefix>/admin/`.
            .insert(header::LOCATION, HeaderValue::from_static("admin/"));
        return Ok(response);
    }
    let file = path.trim_start_matches('/');
    let (name, asset) = match Assets::get(file) {
        Some(asset) if !file.is_empty() => (file, asset),
        // The app routes on the client; unknown paths get the app itself.
        _ => match Assets::get("index.html") {
            Some(asset) => ("index.html", asset),
            None => {
                return Err(ApiError::new(
                    ErrorCode::AdminUiMissing,
                    "this build has no admin UI; run `npm run build` in admin/ and rebuild",
                ));
            }
        },
    };
    let mut response = full(StatusCode::OK, content_type(name), asset.data.into_owned());
    // Built assets carry a content hash in their name; index.html must be revalidated.
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // The app is this origin's scripts and styles only, and no other site may frame it
    // (clickjacking an admin's session).
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(ADMIN_CSP),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}

/// The admin UI's Content-Security-Policy.
const ADMIN_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; object-src 'none'";

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}
