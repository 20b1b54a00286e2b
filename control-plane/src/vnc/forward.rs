//! What crosses the proxy, decided without I/O: which request headers reach the container (an
//! allow-list, so our `Authorization` and cookies never do), which response headers come back and how
//! redirects are kept under the sub-path, where `…/vnc/` sends the browser, and which WebSocket
//! origins are ours.

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
    out
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

/// Where `GET {base}` and `GET {base}/` send the browser: noVNC's page, told (by `path`) where its
/// WebSocket is. noVNC takes host, port and TLS from the page's own URL, so only the path is needed.
pub fn index_location(base: &str) -> String {
    let ws_path = format!("{}/websockify", base.trim_start_matches('/'));
    format!("{base}/vnc.html?autoconnect=true&reconnect=true&resize=remote&path={ws_path}")
}

/// The path part of `PUBLIC_BASE_URL` (`https://example.org/ccp` → `/ccp`), for when a reverse proxy
/// serves the API under a prefix: the browser must see that prefix in the paths we hand out.
pub fn public_prefix(public_base_url: &str) -> &str {
    let rest = public_base_url
        .split_once("://")
        .map_or(public_base_url, |(_, r)| r);
    rest.find('/').map_or("", |i| rest[i..].trim_end_matches('/'))
}

/// Whether a WebSocket request's `Origin` is ours: the origin of `PUBLIC_BASE_URL`, or the request's
/// own `Host` (either scheme). A browser always sends `Origin` on a WebSocket, so a missing one is
/// not a browser and cannot be a cross-site hijack (it still needs credentials); a page elsewhere
/// (or `null`, a sandboxed one) is refused.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, public_base_url: &str) -> bool {
    let Some(origin) = origin else { return true };
    let origin = normalize_origin(origin);
    if normalize_origin(public_base_url) == origin {
        return true;
    }
    host.is_some_and(|h| {
        let h = h.to_ascii_lowercase();
        [format!("http://{h}"), format!("https://{h}")]
            .iter()
            .any(|candidate| normalize_origin(candidate) == origin)
    })
}

/// `scheme://host[:port]` in lower case, without a path or the scheme's default port.
fn normalize_origin(url: &str) -> String {
    let url = url.trim().to_ascii_lowercase();
    let Some((scheme, rest)) = url.split_once("://") else {
        return url;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let default_port = match scheme {
        "http" => Some(":80"),
        "https" => Some(":443"),
        _ => None,
    };
    let authority = default_port
        .and_then(|p| authority.strip_suffix(p))
        .unwrap_or(authority);
    format!("{scheme}://{authority}")
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
        assert_eq!(out["content-type"], "text/html");
        assert_eq!(out["location"], "/v1/user/hosts/h1/vnc/app/");
        assert_eq!(out["cache-control"], "private, no-cache");
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
            index_location(base),
            "/v1/admin/hosts/h/vnc/vnc.html?autoconnect=true&reconnect=true&resize=remote\
             &path=v1/admin/hosts/h/vnc/websockify"
        );
        assert_eq!(public_prefix("https://example.org/ccp/"), "/ccp");
        assert_eq!(public_prefix("http://example.org:8080"), "");
    }

    #[test]
    fn origins() {
        let public = "https://cp.example.org";
        assert!(origin_allowed(None, None, public));
        assert!(origin_allowed(Some("https://cp.example.org"), None, public));
        assert!(origin_allowed(Some("https://CP.example.org:443"), None, public));
        assert!(origin_allowed(
            Some("http://127.0.0.1:8080"),
            Some("127.0.0.1:8080"),
            public
        ));
        assert!(!origin_allowed(
            Some("http://127.0.0.1:9999"),
            Some("127.0.0.1:8080"),
            public
        ));
        assert!(!origin_allowed(
            Some("https://evil.example"),
            Some("cp.example.org"),
            public
        ));
        assert!(!origin_allowed(Some("null"), Some("cp.example.org"), public));
        assert!(!origin_allowed(
            Some("http://cp.example.org.evil"),
            Some("cp.example.org"),
            public
        ));
    }
}
