//! What the OpenAPI document says once for every operation: the security schemes, and the refusals
//! that the extractors and the authentication in front of every handler give, whatever the handler
//! does. Each of these is a shared response under `components.responses`, and every operation that
//! can meet it refers to it: an operation with parameters or a body can be refused as malformed
//! (400), one with a body for its content type (415), one with credentials for their absence (401)
//! or their rights (403), one whose path names an object for its absence (404), and a sign-in for
//! its rate (429).

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, ObjectBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder, Type,
};

/// A refusal every operation it applies to documents by reference.
struct Shared {
    status: &'static str,
    name: &'static str,
    description: &'static str,
}

const BAD_REQUEST: Shared = Shared {
    status: "400",
    name: "BadRequest",
    description: "The request is malformed: a path id that is not a UUID (`invalid_id`), a query \
                  value out of its type or bounds (`invalid_query`), a body that is not JSON \
                  (`invalid_json`), or a body whose fields break the schema or its rules \
                  (`validation_failed`). `error.field` names the field when there is one.",
};
const UNAUTHORIZED: Shared = Shared {
    status: "401",
    name: "Unauthorized",
    description: "No credentials, or credentials that are wrong, expired or revoked (`unauthorized`).",
};
const FORBIDDEN: Shared = Shared {
    status: "403",
    name: "Forbidden",
    description: "The credentials are valid but do not allow this request: an endpoint of another \
                  role (`forbidden`), an API token whose scope does not cover it \
                  (`insufficient_scope`), or a change made with the dashboard's cookie without its \
                  CSRF token or from another site (`csrf_failed`).",
};
const NOT_FOUND: Shared = Shared {
    status: "404",
    name: "NotFound",
    description: "No object with this id, or one this account may not see (`not_found`).",
};
const UNSUPPORTED_MEDIA_TYPE: Shared = Shared {
    status: "415",
    name: "UnsupportedMediaType",
    description: "The body was sent without `Content-Type: application/json` (`unsupported_media_type`).",
};
const TOO_MANY_REQUESTS: Shared = Shared {
    status: "429",
    name: "TooManyRequests",
    description: "Too many attempts from this address or for this account (`rate_limited`), or too \
                  many sign-ins at once (`busy`): retry after the seconds of `Retry-After`.",
};

const ALL: [&Shared; 6] = [
    &BAD_REQUEST,
    &UNAUTHORIZED,
    &FORBIDDEN,
    &NOT_FOUND,
    &UNSUPPORTED_MEDIA_TYPE,
    &TOO_MANY_REQUESTS,
];

/// The routes that take a password or single-use secret from anyone, limited per address and
/// account; the same list as the sign-in gate's.
const SIGN_INS: [&str; 6] = [
    "/v1/auth/login",
    "/v1/admin/login",
    "/v1/auth/session",
    "/v1/bootstrap/sessions",
    "/v1/gateway/auth",
    "/v1/entry/{short_id}/auth",
];

/// Adds the security schemes and the shared responses, and refers every operation to those it
/// can answer.
pub fn complete(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    add_security_schemes(&mut components.security_schemes);
    for shared in ALL {
        components
            .responses
            .insert(shared.name.to_owned(), RefOr::T(response(shared)));
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, operation) in [
            ("get", item.get.as_mut()),
            ("post", item.post.as_mut()),
            ("put", item.put.as_mut()),
            ("patch", item.patch.as_mut()),
            ("delete", item.delete.as_mut()),
        ] {
            if let Some(operation) = operation {
                refer(path, method, operation);
            }
        }
    }
}

fn add_security_schemes(schemes: &mut std::collections::BTreeMap<String, SecurityScheme>) {
    schemes.insert(
        "bearer".to_owned(),
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    // Set by `POST …/vnc-session` for the VNC proxy routes, where browsers cannot send headers.
    schemes.insert(
        "vnc_cookie".to_owned(),
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::vnc::cookie::COOKIE_NAME))),
    );
    // The dashboard's browser session (`POST /v1/auth/session`); accepted by every route that takes
    // a bearer token, with `X-CSRF-Token` on changes.
    schemes.insert(
        "session_cookie".to_owned(),
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
            crate::auth::browser::COOKIE_NAME,
        ))),
    );
    // The credentials nodes and gateways get when they enrol.
    schemes.insert(
        "agent_token".to_owned(),
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(wire::AGENT_TOKEN_HEADER))),
    );
    schemes.insert(
        "gateway_token".to_owned(),
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(wire::GATEWAY_TOKEN_HEADER))),
    );
}

fn response(shared: &Shared) -> Response {
    let body = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    let mut response = ResponseBuilder::new()
        .description(shared.description)
        .content("application/json", body);
    if shared.status == TOO_MANY_REQUESTS.status {
        let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1));
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(seconds)
                .description(Some("Seconds to wait before trying again."))
                .build(),
        );
    }
    response.build()
}

/// Refers `operation` to each shared refusal it can answer. A response the operation documents
/// itself with a description of its own is kept; one without (a bare error body) is replaced.
fn refer(path: &str, method: &str, operation: &mut Operation) {
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    let in_path = parameters
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Path));
    let has_input = !parameters.is_empty() || operation.request_body.is_some();
    let has_body = operation.request_body.is_some();
    // An operation is open to anyone when it names no scheme, or an empty requirement among them.
    let empty = utoipa::openapi::security::SecurityRequirement::default();
    let secured = operation
        .security
        .as_ref()
        .is_some_and(|reqs| !reqs.is_empty() && !reqs.contains(&empty));
    let sign_in = method == "post" && SIGN_INS.contains(&path);
    for (applies, shared) in [
        (has_input, &BAD_REQUEST),
        (secured, &UNAUTHORIZED),
        (secured, &FORBIDDEN),
        (in_path, &NOT_FOUND),
        (has_body, &UNSUPPORTED_MEDIA_TYPE),
        (sign_in, &TOO_MANY_REQUESTS),
    ] {
        if !applies {
            continue;
        }
        let own = operation
            .responses
            .responses
            .get(shared.status)
            .is_some_and(|r| match r {
                RefOr::T(response) => !response.description.is_empty(),
                RefOr::Ref(_) => true,
            });
        if !own {
            operation.responses.responses.insert(
                shared.status.to_owned(),
                RefOr::Ref(Ref::from_response_name(shared.name)),
            );
        }
    }
}
