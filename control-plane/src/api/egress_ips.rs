//! Egress IPs, managed by the operator: `/v1/admin/egress-ips…`.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Admin;
use crate::db::egress_ips::{EgressIp, TunnelType};
use crate::db::events::NewEvent;
use crate::db::{self, UtcTime};
use crate::egress::proxy::{self, ConfigError, MASK};
use crate::egress::secrets::Opened;
use crate::egress::wireguard;
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::{Json, Path, Query};
use crate::secrets::{Sealed, SecretsKey, field};

use super::{PageQuery, Paginated};

/// An egress IP as the API shows it: secrets replaced by `"********"`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EgressView {
    pub id: String,
    pub label: String,
    /// The declared exit address. Tests compare against it; they never change it.
    pub ip_address: String,
    pub tunnel_type: TunnelType,
    pub provider: String,
    pub wg_endpoint: Option<String>,
    pub wg_public_key: Option<String>,
    pub wg_preshared_key: Option<String>,
    pub wg_allowed_ips: Option<String>,
    pub wg_dns_server: Option<String>,
    pub wg_peer_address: Option<String>,
    /// Public half of the key pair this system generated; register it with the provider.
    pub wg_client_public_key: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub proxy_config: Option<serde_json::Value>,
    /// Resolver reached through the tunnel (proxies), if set for this egress IP.
    pub dns_server: Option<String>,
    /// The exit address the latest test observed.
    pub observed_ip: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_test_at: Option<UtcTime>,
    #[schema(value_type = Option<Object>)]
    pub last_test: Option<serde_json::Value>,
    /// Hosts bound to this egress IP.
    pub bound_hosts: i64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: UtcTime,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: UtcTime,
}

impl EgressView {
    fn new(e: &EgressIp, key: &SecretsKey) -> Self {
        let proxy_config = e.proxy_config.as_ref().and_then(|sealed| {
            sealed
                .open(key, field::EGRESS_PROXY_CONFIG)
                .inspect_err(
                    |error| tracing::error!(%error, egress_ip_id = %e.id, "proxy_config does not open"),
                )
                .ok()
                .and_then(|raw| serde_json::from_str(&raw).ok())
        });
        Self {
            id: e.id.clone(),
            label: e.label.clone(),
            ip_address: e.ip_address.clone(),
            tunnel_type: e.tunnel_type,
            provider: e.provider.clone(),
            wg_endpoint: e.wg_endpoint.clone(),
            wg_public_key: e.wg_public_key.clone(),
            wg_preshared_key: e.wg_preshared_key.as_ref().map(|_| MASK.to_owned()),
            wg_allowed_ips: e.wg_allowed_ips.clone(),
            wg_dns_server: e.wg_dns_server.clone(),
            wg_peer_address: e.wg_peer_address.clone(),
            wg_client_public_key: wireguard::public_key_of_sealed(
                key,
                field::EGRESS_WG_PRIVATE_KEY,
                e.wg_private_key.as_ref(),
            ),
            proxy_config: proxy_config.as_ref().map(proxy::mask_value),
            dns_server: e.dns_server.clone(),
            observed_ip: e.observed_ip.clone(),
            last_test_at: e.last_test_at,
            last_test: e
                .last_test_result
                .as_deref()
                .and_then(|raw| serde_json::from_str(raw).ok()),
            bound_hosts: e.bound_hosts,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEgress {
    /// 1-64 characters, unique.
    pub label: String,
    /// The declared exit address.
    pub ip_address: String,
    pub tunnel_type: TunnelType,
    /// Free text, default `manual`.
    pub provider: Option<String>,
    pub wg_endpoint: Option<String>,
    pub wg_public_key: Option<String>,
    pub wg_preshared_key: Option<String>,
    pub wg_allowed_ips: Option<String>,
    pub wg_dns_server: Option<String>,
    pub wg_peer_address: Option<String>,
    /// sing-box outbound (`socks`, `http`, `shadowsocks`, `vmess`, `vless`, `trojan`).
    #[schema(value_type = Option<Object>)]
    pub proxy_config: Option<serde_json::Value>,
    pub dns_server: Option<String>,
}

/// Any subset of the fields; only those sent change. `null` clears an optional field.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEgress {
    pub label: Option<String>,
    pub ip_address: Option<String>,
    pub tunnel_type: Option<TunnelType>,
    pub provider: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub wg_endpoint: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub wg_public_key: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub wg_preshared_key: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub wg_allowed_ips: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub wg_dns_server: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub wg_peer_address: Option<Option<String>>,
    /// Merged into the stored config unless its `type` changes.
    #[schema(value_type = Option<Object>)]
    pub proxy_config: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub dns_server: Option<Option<String>>,
}

/// Tells "absent" (`None`) from "null" (`Some(None)`).
pub(super) fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EgressFilter {
    pub tunnel_type: Option<TunnelType>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_egress, list_egress))
        .routes(routes!(get_egress, update_egress, delete_egress))
        .routes(routes!(test_egress))
        .routes(routes!(rotate_wg_key))
}

fn config_error(e: ConfigError) -> ApiError {
    ApiError::invalid(e.field, e.message)
}

fn printable(field: &str, value: &str, max: usize) -> ApiResult<()> {
    let len = value.chars().count();
    if len == 0 || len > max || value.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be 1-{max} printable characters"),
        ));
    }
    Ok(())
}

fn ip(field: &str, value: &str) -> ApiResult<String> {
    value
        .trim()
        .parse::<IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| ApiError::invalid(field, format!("{field} must be an IPv4 or IPv6 address")))
}

/// Checks and normalises a whole row with its secrets in clear; both create and update end here, so a
/// stored row is always valid.
fn validate(e: &mut EgressIp, secret: &mut Opened) -> ApiResult<()> {
    printable("label", &e.label, 64)?;
    printable("provider", &e.provider, 64)?;
    e.ip_address = ip("ip_address", &e.ip_address)?;
    if let Some(dns) = &e.dns_server {
        e.dns_server = Some(ip("dns_server", dns)?);
    }
    match e.tunnel_type {
        TunnelType::Wireguard => {
            if secret.proxy_config.is_some() {
                return Err(ApiError::invalid(
                    "proxy_config",
                    "proxy_config is only for tunnel_type `proxy`",
                ));
            }
            let endpoint = e.wg_endpoint.as_deref().ok_or_else(|| required("wg_endpoint"))?;
            e.wg_endpoint = Some(
                wireguard::validate_endpoint("wg_endpoint", endpoint)
                    .map_err(config_error)?
                    .to_string(),
            );
            let key = e
                .wg_public_key
                .as_deref()
                .ok_or_else(|| required("wg_public_key"))?;
            wireguard::validate_key("wg_public_key", key).map_err(config_error)?;
            if let Some(psk) = &secret.wg_preshared_key {
                wireguard::validate_key("wg_preshared_key", psk).map_err(config_error)?;
            }
            let allowed = e.wg_allowed_ips.as_deref().unwrap_or("0.0.0.0/0, ::/0");
            e.wg_allowed_ips =
                Some(wireguard::validate_allowed_ips("wg_allowed_ips", allowed).map_err(config_error)?);
            if let Some(dns) = &e.wg_dns_server {
                e.wg_dns_server = Some(
                    wireguard::validate_dns_server("wg_dns_server", dns)
                        .map_err(config_error)?
                        .to_string(),
                );
            }
            let peer = e
                .wg_peer_address
                .as_deref()
                .ok_or_else(|| required("wg_peer_address"))?;
            e.wg_peer_address =
                Some(wireguard::validate_peer_address("wg_peer_address", peer).map_err(config_error)?);
        }
        TunnelType::Proxy => {
            let wg_fields = [
                ("wg_endpoint", &e.wg_endpoint),
                ("wg_public_key", &e.wg_public_key),
                ("wg_preshared_key", &secret.wg_preshared_key),
                ("wg_allowed_ips", &e.wg_allowed_ips),
                ("wg_dns_server", &e.wg_dns_server),
                ("wg_peer_address", &e.wg_peer_address),
            ];
            if let Some((field, _)) = wg_fields.iter().find(|(_, v)| v.is_some()) {
                return Err(ApiError::invalid(
                    *field,
                    format!("{field} is only for tunnel_type `wireguard`"),
                ));
            }
            let raw = secret
                .proxy_config
                .as_deref()
                .ok_or_else(|| required("proxy_config"))?;
            let value: serde_json::Value = serde_json::from_str(raw)
                .map_err(|_| ApiError::invalid("proxy_config", "not a JSON object"))?;
            let parsed = proxy::parse(&value).map_err(config_error)?;
            let canonical = serde_json::to_string(&parsed).map_err(ApiError::internal)?;
            secret.proxy_config = Some(canonical);
            secret.wg_private_key = None;
        }
    }
    Ok(())
}

fn required(field: &str) -> ApiError {
    ApiError::invalid(field, format!("{field} is required for this tunnel_type"))
}

async fn egress_or_404(state: &AppState, id: Uuid) -> ApiResult<EgressIp> {
    db::egress_ips::get(&state.db, &id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found("egress IP"))
}

/// Declares an egress IP reached through WireGuard or a proxy.
#[utoipa::path(post, path = "/v1/admin/egress-ips", tag = "egress-ips", security(("bearer" = [])),
    request_body = CreateEgress,
    responses((status = 201, body = EgressView), (status = 400, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
async fn create_egress(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(req): Json<CreateEgress>,
) -> ApiResult<(StatusCode, Json<EgressView>)> {
    let now = UtcTime::now();
    let mut secret = Opened {
        wg_preshared_key: req.wg_preshared_key,
        wg_private_key: (req.tunnel_type == TunnelType::Wireguard).then(|| wireguard::generate_keypair().0),
        proxy_config: req.proxy_config.as_ref().map(serde_json::Value::to_string),
    };
    let mut row = EgressIp {
        id: db::new_id(),
        label: req.label,
        ip_address: req.ip_address,
        tunnel_type: req.tunnel_type,
        provider: req.provider.unwrap_or_else(|| "manual".to_owned()),
        wg_endpoint: req.wg_endpoint,
        wg_public_key: req.wg_public_key,
        wg_preshared_key: None,
        wg_allowed_ips: req.wg_allowed_ips,
        wg_dns_server: req.wg_dns_server,
        wg_peer_address: req.wg_peer_address,
        wg_private_key: None,
        proxy_config: None,
        dns_server: req.dns_server,
        observed_ip: None,
        last_test_at: None,
        last_test_result: None,
        created_at: now,
        updated_at: now,
        bound_hosts: 0,
    };
    validate(&mut row, &mut secret)?;
    secret.seal_into(&mut row, &state.secrets);
    let mut tx = state.db.begin().await?;
    match db::egress_ips::insert(&mut *tx, &row).await {
        Ok(()) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict(
                "label_taken",
                "an egress IP with this label already exists",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let event = NewEvent::success("egress_ip.created").details(serde_json::json!({
        "egress_ip_id": row.id, "label": row.label, "ip_address": row.ip_address, "tunnel_type": row.tunnel_type,
    }));
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(EgressView::new(&row, &state.secrets))))
}

/// Lists egress IPs.
#[utoipa::path(get, path = "/v1/admin/egress-ips", tag = "egress-ips", security(("bearer" = [])),
    params(PageQuery, EgressFilter), responses((status = 200, body = Paginated<EgressView>)))]
async fn list_egress(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(page): Query<PageQuery>,
    Query(filter): Query<EgressFilter>,
) -> ApiResult<Paginated<EgressView>> {
    let page = page.resolve()?;
    let (rows, total) = db::egress_ips::list(&state.db, filter.tunnel_type, page).await?;
    Ok(Paginated::new(
        rows.iter().map(|e| EgressView::new(e, &state.secrets)).collect(),
        page,
        total,
    ))
}

/// One egress IP, secrets masked.
#[utoipa::path(get, path = "/v1/admin/egress-ips/{ip_id}", tag = "egress-ips", security(("bearer" = [])),
    params(("ip_id" = Uuid, Path)),
    responses((status = 200, body = EgressView), (status = 404, body = crate::error::ErrorBody)))]
async fn get_egress(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(ip_id): Path<Uuid>,
) -> ApiResult<Json<EgressView>> {
    Ok(Json(EgressView::new(
        &egress_or_404(&state, ip_id).await?,
        &state.secrets,
    )))
}

/// Changes only the fields sent. Bound hosts pick the change up when they are next started.
#[utoipa::path(put, path = "/v1/admin/egress-ips/{ip_id}", tag = "egress-ips", security(("bearer" = [])),
    params(("ip_id" = Uuid, Path)), request_body = UpdateEgress,
    responses((status = 200, body = EgressView), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
async fn update_egress(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(ip_id): Path<Uuid>,
    Json(req): Json<UpdateEgress>,
) -> ApiResult<Json<EgressView>> {
    let mut row = egress_or_404(&state, ip_id).await?;
    let mut secret = Opened::of(&row, &state.secrets).map_err(ApiError::internal)?;
    let before_type = row.tunnel_type;
    let mut changed: Vec<&str> = Vec::new();
    macro_rules! set {
        ($field:ident, $value:expr) => {{
            row.$field = $value;
            changed.push(stringify!($field));
        }};
    }
    if let Some(v) = req.label {
        set!(label, v)
    }
    if let Some(v) = req.ip_address {
        set!(ip_address, v)
    }
    if let Some(v) = req.provider {
        set!(provider, v)
    }
    if let Some(v) = req.tunnel_type {
        set!(tunnel_type, v)
    }
    if row.tunnel_type != before_type {
        // Switching kind drops the settings of the old kind; the new ones must come in the same request.
        row.wg_endpoint = None;
        row.wg_public_key = None;
        row.wg_allowed_ips = None;
        row.wg_dns_server = None;
        row.wg_peer_address = None;
        secret = Opened {
            wg_private_key: (row.tunnel_type == TunnelType::Wireguard)
                .then(|| wireguard::generate_keypair().0),
            ..Opened::default()
        };
    }
    if let Some(v) = req.wg_endpoint {
        set!(wg_endpoint, v)
    }
    if let Some(v) = req.wg_public_key {
        set!(wg_public_key, v)
    }
    if let Some(v) = req.wg_preshared_key {
        // The mask sent back unchanged keeps the stored key.
        if v.as_deref() != Some(MASK) {
            secret.wg_preshared_key = v;
            changed.push("wg_preshared_key");
        }
    }
    if let Some(v) = req.wg_allowed_ips {
        set!(wg_allowed_ips, v)
    }
    if let Some(v) = req.wg_dns_server {
        set!(wg_dns_server, v)
    }
    if let Some(v) = req.wg_peer_address {
        set!(wg_peer_address, v)
    }
    if let Some(v) = req.dns_server {
        set!(dns_server, v)
    }
    if let Some(patch) = req.proxy_config {
        let stored: serde_json::Value = secret
            .proxy_config
            .as_deref()
            .and_then(|raw| serde_json::from_str(raw).ok())
            .unwrap_or_else(|| serde_json::json!({}));
        secret.proxy_config = Some(proxy::merge(&stored, &patch).to_string());
        changed.push("proxy_config");
    }
    validate(&mut row, &mut secret)?;
    secret.seal_into(&mut row, &state.secrets);
    let now = UtcTime::now();
    row.updated_at = now;
    let mut tx = state.db.begin().await?;
    match db::egress_ips::update(&mut *tx, &row).await {
        Ok(()) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict(
                "label_taken",
                "an egress IP with this label already exists",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let event = NewEvent::success("egress_ip.updated")
        .details(serde_json::json!({ "egress_ip_id": row.id, "label": row.label, "fields": changed }));
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    let row = egress_or_404(&state, ip_id).await?;
    Ok(Json(EgressView::new(&row, &state.secrets)))
}

/// Deletes an egress IP; refused with 409 while any host is bound to it.
#[utoipa::path(delete, path = "/v1/admin/egress-ips/{ip_id}", tag = "egress-ips", security(("bearer" = [])),
    params(("ip_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
async fn delete_egress(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(ip_id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    let row = db::egress_ips::get(&mut *tx, &ip_id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found("egress IP"))?;
    if db::bindings::count_for_egress(&mut *tx, &row.id).await? > 0 {
        return Err(ApiError::conflict(
            "egress_ip_in_use",
            "hosts are still bound to this egress IP; unbind them first",
        ));
    }
    db::egress_ips::delete(&mut *tx, &row.id).await?;
    let event = NewEvent::success("egress_ip.deleted")
        .details(serde_json::json!({ "egress_ip_id": row.id, "label": row.label }));
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces the WireGuard key pair this system holds for the egress IP itself and shows the new
/// public key (`wg_client_public_key`) to register with the provider. Egress tests use this pair;
/// bound hosts have their own (rotated through their binding), except bindings made before hosts
/// had keys of their own, which use this one from their next start.
#[utoipa::path(post, path = "/v1/admin/egress-ips/{ip_id}/rotate-wg-key", tag = "egress-ips",
    security(("bearer" = [])), params(("ip_id" = Uuid, Path)),
    responses((status = 200, body = EgressView), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
async fn rotate_wg_key(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(ip_id): Path<Uuid>,
) -> ApiResult<Json<EgressView>> {
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    let mut row = db::egress_ips::get(&mut *tx, &ip_id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found("egress IP"))?;
    if row.tunnel_type != TunnelType::Wireguard {
        return Err(ApiError::conflict(
            "not_wireguard",
            "only a WireGuard egress IP has a key pair to rotate",
        ));
    }
    let old_public = wireguard::public_key_of_sealed(
        &state.secrets,
        field::EGRESS_WG_PRIVATE_KEY,
        row.wg_private_key.as_ref(),
    );
    let (private, new_public) = wireguard::generate_keypair();
    row.wg_private_key = Some(Sealed::seal(
        &state.secrets,
        field::EGRESS_WG_PRIVATE_KEY,
        &private,
    ));
    row.updated_at = now;
    db::egress_ips::update(&mut *tx, &row).await?;
    let event = NewEvent::success("egress_ip.wg_key_rotated").details(serde_json::json!({
        "egress_ip_id": row.id, "label": row.label,
        "old_public_key": old_public, "new_public_key": new_public,
    }));
    db::events::record(&mut *tx, &admin.actor(), event, now).await?;
    tx.commit().await?;
    Ok(Json(EgressView::new(&row, &state.secrets)))
}

/// The outcome of `POST /v1/admin/egress-ips/{ip_id}/test`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    pub egress_ip_id: String,
    /// All three checks passed.
    pub passed: bool,
    /// The declared exit address (`ip_address`), never changed by a test.
    pub declared_ip: String,
    /// The exit address the test saw, when it saw one.
    pub observed_ip: Option<String>,
    /// `connectivity`, `exit_ip`, `dns_leak`.
    pub checks: Vec<CheckView>,
    pub duration_ms: u64,
    #[schema(value_type = String, format = DateTime)]
    pub tested_at: UtcTime,
}

/// One check: whether it passed, how long it took, what it saw, and why it failed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckView {
    pub name: String,
    pub status: CheckStatus,
    pub passed: bool,
    pub latency_ms: Option<u64>,
    pub observed: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Fail,
}

impl From<wire::CheckResult> for CheckView {
    fn from(c: wire::CheckResult) -> Self {
        Self {
            status: if c.passed {
                CheckStatus::Pass
            } else {
                CheckStatus::Fail
            },
            name: c.name,
            passed: c.passed,
            latency_ms: c.latency_ms,
            observed: c.observed,
            error: c.error,
        }
    }
}

/// The whole test, tunnel included, is bounded by this.
const TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a test waits for any agent to take it before answering that none is there.
const CLAIM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the connectivity, exit-IP and DNS-leak checks through the real tunnel on an agent, within
/// 30 s. The observed exit IP is stored apart from the declared one; a mismatch fails the exit-IP
/// check and changes nothing else.
#[utoipa::path(post, path = "/v1/admin/egress-ips/{ip_id}/test", tag = "egress-ips", security(("bearer" = [])),
    params(("ip_id" = Uuid, Path)),
    responses((status = 200, body = TestResult), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
async fn test_egress(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(ip_id): Path<Uuid>,
) -> ApiResult<Json<TestResult>> {
    let started = std::time::Instant::now();
    let row = egress_or_404(&state, ip_id).await?;
    crate::egress::spec::of(&row, None, &state.secrets, state.settings.egress_dns_server)
        .map_err(|e| ApiError::conflict("egress_incomplete", e.to_string()))?;
    let now = UtcTime::now();
    let live_since = UtcTime::from(now.0 - chrono::Duration::seconds(60));
    if db::nodes::live(&state.db, live_since).await?.is_empty() {
        return Err(ApiError::unavailable(
            "no_agent",
            "no agent is connected to run the egress test",
        ));
    }
    let deadline = UtcTime::from(now.0 + chrono::Duration::from_std(TEST_TIMEOUT).unwrap_or_default());
    let test = db::egress_tests::insert(&state.db, &row.id, now, deadline).await?;
    state.wake_agents();
    let checks = wait_for_checks(&state, &test.id, started).await?;
    let Some(checks) = checks else {
        return Err(ApiError::unavailable(
            "no_agent",
            "no agent took the egress test; is an agent connected?",
        ));
    };
    let tested_at = UtcTime::now();
    let observed_ip = checks
        .iter()
        .find(|c| c.name == wire::checks::EXIT_IP)
        .and_then(|c| c.observed.clone());
    let views: Vec<CheckView> = checks.into_iter().map(CheckView::from).collect();
    let passed = views.len() == 3 && views.iter().all(|c| c.passed);
    let result = TestResult {
        egress_ip_id: row.id.clone(),
        passed,
        declared_ip: row.ip_address.clone(),
        observed_ip: observed_ip.clone(),
        checks: views,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        tested_at,
    };
    let stored = serde_json::json!({
        "passed": result.passed,
        "checks": result.checks,
        "observed_ip": result.observed_ip,
        "duration_ms": result.duration_ms,
    });
    let mut tx = state.db.begin().await?;
    db::egress_ips::record_test(
        &mut *tx,
        &row.id,
        observed_ip.as_deref(),
        &stored.to_string(),
        tested_at,
    )
    .await?;
    let event = NewEvent {
        outcome: if passed {
            db::events::Outcome::Success
        } else {
            db::events::Outcome::Failure
        },
        ..NewEvent::success("egress_ip.tested")
    }
    .details(serde_json::json!({
        "egress_ip_id": row.id, "label": row.label, "passed": passed,
        "declared_ip": row.ip_address, "observed_ip": observed_ip,
    }));
    db::events::record(&mut *tx, &admin.actor(), event, tested_at).await?;
    tx.commit().await?;
    Ok(Json(result))
}

/// Waits for the agent's checks. `None`: no agent claimed the test in time. A test claimed but not
/// answered within the bound gives three failed checks saying so.
async fn wait_for_checks(
    state: &AppState,
    test_id: &str,
    started: std::time::Instant,
) -> ApiResult<Option<Vec<wire::CheckResult>>> {
    loop {
        // Made before the row is read, so an answer that lands in between still wakes this wait.
        let notified = state.work.notified();
        let test = db::egress_tests::get(&state.db, test_id)
            .await?
            .ok_or_else(|| ApiError::internal("egress test row vanished"))?;
        let elapsed = started.elapsed();
        let status = test.status.as_str();
        if status == "done" {
            let checks = test.checks.as_deref().unwrap_or("[]");
            return serde_json::from_str(checks).map(Some).map_err(ApiError::internal);
        }
        if status == "expired" {
            return Err(ApiError::unavailable(
                "egress_test_lost",
                "the egress IP changed or went away during the test",
            ));
        }
        let give_up = (status == "queued" && elapsed >= CLAIM_TIMEOUT) || elapsed >= TEST_TIMEOUT;
        // Expiring can lose against the agent's claim or answer: then look again.
        if give_up && db::egress_tests::expire(&state.db, test_id, UtcTime::now()).await? {
            if status == "queued" {
                return Ok(None);
            }
            let error = format!("the test did not finish within {} s", TEST_TIMEOUT.as_secs());
            return Ok(Some(wire::CheckResult::all_failed(&error)));
        }
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), notified).await;
    }
}
