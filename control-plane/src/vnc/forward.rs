//! What crosses the proxy, decided without I/O: which request headers reach the container (an
//! allow-list, so our `Authorization` and cookies never do), which response headers come back and how
//! redirects are kept under the sub-path, and where `…/vnc/` sends the browser.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

/// Request headers a static web client needs; everything else (credentials, cookies, forwarding
/// and hop-by-hop headers, the browser's Host and Origin) stays here.
const REQUEST_ALLOW: [HeaderName; 8] = [
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
    header::IF_MODIFIED_SINCE,
    header::IF_NONE_MATCH,
    header::IF_RANGE,
    header::RANGE,
    header::USER_AGENT,
];

/// Response headers passed back; `Set-Cookie` in particular is not (the container must not set
/// cookies on the control plane's origin).
const RESPONSE_ALLOW: [HeaderName; 10] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_RANGE,
    header::ACCEPT_RANGES,
    header::ETAG,
    header::LAST_MODIFIED,
    header::EXPIRES,
    header::DATE,
    header::VARY,
];

pub fn request_headers(incoming: &HeaderMap) -> HeaderMap {
    copy_allowed(incoming, &REQUEST_ALLOW)
}

/// The upstream response's headers as the browser gets them. `base` is the proxy's path for the
/// host (`/v1/admin/hosts/{id}/vnc`, no trailing slash) as the browser sees it.
pub fn response_headers(upstream: &HeaderMap, base: &str) -> HeaderMap {
    let mut out = copy_allowed(upstream, &RESPONSE_ALLOW);
    // What the host serves is the tenant's, and the tenant is root in the host: it must never run
    // in our origin. A sandboxed document runs no script, submits no form and gets an opaque origin
    // (so our cookies and storage are out of its reach, and any WebSocket it opens says
    // `Origin: null`, which the proxy refuses); a script type is not passed on, so not even our own
    // pages could be made to load the host's files as script (`nosniff` holds the browser to it).
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(HOSTED_CSP),
    );
    let content_type = out
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(inert_content_type);
    if let Some(v) = content_type {
        out.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
    }
    if let Some(location) = upstream.get(header::LOCATION).and_then(|v| v.to_str().ok())
        && let Ok(v) = HeaderValue::from_str(&rewrite_location(location, base))
    {
        out.insert(header::LOCATION, v);
    }
    // Pages behind authentication: no shared cache may keep them.
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    out.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    out
}

/// The policy of everything passed through from a host: a sandbox with no script, no plugins, no
/// forms, nothing loaded from elsewhere; inline styles and inline images only, so a page still reads.
pub const HOSTED_CSP: &str =
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'";

/// The content type a host's response is passed on with: documents, styles, images, fonts and data
/// as they are; anything else (JavaScript above all) as opaque bytes.
pub fn inert_content_type(upstream: &str) -> &'static str {
    let essence = upstream
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "text/html" => "text/html; charset=utf-8",
        "text/plain" => "text/plain; charset=utf-8",
        "text/css" => "text/css; charset=utf-8",
        "application/json" => "application/json",
        "image/png" => "image/png",
        "image/jpeg" => "image/jpeg",
        "image/gif" => "image/gif",
        "image/webp" => "image/webp",
        "image/x-icon" | "image/vnd.microsoft.icon" => "image/x-icon",
        "image/svg+xml" => "image/svg+xml",
        "font/woff" => "font/woff",
        "font/woff2" => "font/woff2",
        "font/ttf" => "font/ttf",
        "font/otf" => "font/otf",
        _ => "application/octet-stream",
    }
}

fn copy_allowed(from: &HeaderMap, allow: &[HeaderName]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in allow {
        for value in from.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// A redirect of the container's web server, kept under the proxy's path: `/app/` (websockify
/// redirects directories this way) and `http://10.1.2.3:6080/app/` both become `{base}/app/`;
/// relative references already resolve under the sub-path.
pub fn rewrite_location(location: &str, base: &str) -> String {
    let path = match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None if location.starts_with("//") => {
            let rest = &location[2..];
            rest.find('/').map_or("/", |i| &rest[i..])
        }
        None if location.starts_with('/') => location,
        None => return location.to_owned(),
    };
    format!("{base}{path}")
}

/// Where `GET {base}` and `GET {base}/` send the browser: the dashboard's own desktop viewer (noVNC's
/// client, served from the control plane's files, never the host's), told which host to show. Its
/// WebSocket is `{base}/websockify`.
pub fn index_location(prefix: &str, scope: &str, host_id: &str) -> String {
    format!("{prefix}/ui/desktop.html?scope={scope}&host={host_id}")
}

/// The path part of `PUBLIC_BASE_URL` (`https://example.org/ccp` → `/ccp`), for when a reverse proxy
/// serves the API under a prefix: the browser must see that prefix in the paths we hand out.
pub fn public_prefix(public_base_url: &str) -> &str {
    let rest = public_base_url
        .split_once("://")
        .map_or(public_base_url, |(_, r)| r);
    rest.find('/').map_or("", |i| rest[i..].trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_cookies_never_cross() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer secret"),
            ("cookie", "ccp_vnc=a.b; other=1"),
            ("proxy-authorization", "Basic x"),
            ("x-forwarded-for", "1.2.3.4"),
            ("host", "cp.example.org"),
            ("origin", "https://cp.example.org"),
            ("connection", "keep-alive"),
            ("accept", "text/html"),
            ("if-none-match", "\"abc\""),
        ] {
            h.append(k, v.parse().unwrap());
        }
        let out = request_headers(&h);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept", "if-none-match"]);
    }

    #[test]
    fn response_headers_drop_cookies_and_keep_redirects_under_the_base() {
        let mut h = HeaderMap::new();
        h.insert("set-cookie", "session=evil; Path=/".parse().unwrap());
        h.insert("content-type", "text/html".parse().unwrap());
        h.insert("location", "/app/".parse().unwrap());
        h.insert("server", "WebSockify Python/3.11".parse().unwrap());
        let out = response_headers(&h, "/v1/user/hosts/h1/vnc");
        assert!(out.get("set-cookie").is_none());
        assert!(out.get("server").is_none());
        assert_eq!(out["content-type"], "text/html; charset=utf-8");
        assert_eq!(out["location"], "/v1/user/hosts/h1/vnc/app/");
        assert_eq!(out["cache-control"], "private, no-cache");
        assert_eq!(out["content-security-policy"], HOSTED_CSP);
        assert!(HOSTED_CSP.starts_with("sandbox;"));
        assert!(!HOSTED_CSP.contains("allow-"), "no sandbox exception at all");
    }

    #[test]
    fn the_hosts_scripts_are_passed_on_as_bytes() {
        for script in [
            "text/javascript",
            "application/javascript; charset=utf-8",
            "TEXT/JavaScript",
            "application/ecmascript",
            "text/x-javascript",
            "application/wasm",
            "",
            "text/html-sandboxed",
        ] {
            assert_eq!(
                inert_content_type(script),
                "application/octet-stream",
                "{script:?}"
            );
            let mut h = HeaderMap::new();
            h.insert("content-type", script.parse().unwrap());
            assert_eq!(
                response_headers(&h, "/b")["content-type"],
                "application/octet-stream"
            );
        }
        assert_eq!(inert_content_type("image/png"), "image/png");
        assert_eq!(
            inert_content_type("text/css; charset=latin1"),
            "text/css; charset=utf-8"
        );
    }

    #[test]
    fn locations() {
        let base = "/v1/admin/hosts/h/vnc";
        assert_eq!(rewrite_location("/app/", base), "/v1/admin/hosts/h/vnc/app/");
        assert_eq!(
            rewrite_location("http://10.0.0.2:6080/core/?x=1", base),
            "/v1/admin/hosts/h/vnc/core/?x=1"
        );
        assert_eq!(
            rewrite_location("http://10.0.0.2:6080", base),
            "/v1/admin/hosts/h/vnc/"
        );
        assert_eq!(
            rewrite_location("//evil.example/x", base),
            "/v1/admin/hosts/h/vnc/x"
        );
        assert_eq!(rewrite_location("app/", base), "app/");
        assert_eq!(
            index_location("/ccp", "admin", "h"),
            "/ccp/ui/desktop.html?scope=admin&host=h"
        );
        assert_eq!(public_prefix("https://example.org/ccp/"), "/ccp");
        assert_eq!(public_prefix("http://example.org:8080"), "");
    }
}
