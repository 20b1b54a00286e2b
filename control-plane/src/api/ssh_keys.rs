//! SSH public keys: managed by the operator for a user (`/v1/admin/users/{id}/ssh-keys…`) and by the
//! user for themselves (`/v1/user/ssh-keys…`).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{Admin, Tenant};
use crate::db::events::{Actor, NewEvent};
use crate::db::ssh_keys::{NewKey, SshKey};
use crate::db::{self, UtcTime};
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::extract::{Json, Path, Query};

use super::{PageQuery, Paginated};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddKey {
    /// OpenSSH one-line public key: `ssh-ed25519 AAAA… comment`.
    pub public_key: String,
    /// Display name (1-64 printable characters); defaults to the key's comment.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateKey {
    /// Display name (1-64 printable characters).
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GeneratedKey {
    #[serde(flatten)]
    pub key: SshKey,
    /// OpenSSH private key. Shown only in this response; it is not stored.
    pub private_key: String,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(admin_list, admin_add))
        .routes(routes!(admin_generate))
        .routes(routes!(admin_delete))
        .routes(routes!(own_list, own_add))
        .routes(routes!(own_generate))
        .routes(routes!(own_delete))
}

/// Most keys one user may hold: each goes into every login check and host, so the list stays short.
pub const MAX_KEYS_PER_USER: i64 = 50;

/// Longest accepted key line: an RSA-16384 key fits with room for a comment.
const MAX_KEY_LEN: usize = 8192;

/// A key checked for use: parsed, of an accepted algorithm and strength.
#[derive(Debug)]
pub struct CheckedKey {
    pub key_type: String,
    pub line: String,
    pub fingerprint: String,
    pub comment: String,
}

pub fn check_public_key(raw: &str) -> Result<CheckedKey, ApiError> {
    let invalid = |msg: &str| ApiError::invalid("public_key", msg.to_owned());
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > MAX_KEY_LEN || raw.contains(['\n', '\r']) {
        return Err(invalid("public_key must be one line in OpenSSH format"));
    }
    let key = PublicKey::from_openssh(raw).map_err(|_| invalid("public_key is not an OpenSSH public key"))?;
    match key.algorithm() {
        Algorithm::Dsa => return Err(invalid("DSA keys are not accepted")),
        Algorithm::Rsa { .. } => {
            let bits = key
                .key_data()
                .rsa()
                .and_then(|k| k.n.as_positive_bytes())
                .map_or(0, |n| n.len() * 8);
            if bits < 2048 {
                return Err(invalid("RSA keys must have at least 2048 bits"));
            }
        }
        Algorithm::Other(_) => return Err(invalid("unsupported key algorithm")),
        _ => {}
    }
    let comment: String = key
        .comment()
        .chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect();
    let mut clean = key.clone();
    clean.set_comment(comment.clone());
    let line = clean
        .to_openssh()
        .map_err(|_| invalid("public_key cannot be encoded"))?;
    Ok(CheckedKey {
        key_type: key.algorithm().as_str().to_owned(),
        line,
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        comment,
    })
}

fn key_name(given: Option<&str>, comment: &str, fingerprint: &str) -> ApiResult<String> {
    match given {
        Some(n) => {
            let len = n.chars().count();
            if !(1..=64).contains(&len) || n.chars().any(char::is_control) {
                return Err(ApiError::invalid(
                    "name",
                    "name must be 1-64 printable characters",
                ));
            }
            Ok(n.to_owned())
        }
        None if !comment.is_empty() => Ok(comment.chars().take(64).collect()),
        None => Ok(format!(
            "key {}",
            fingerprint.chars().skip(7).take(12).collect::<String>()
        )),
    }
}

async fn store_key(
    state: &AppState,
    actor: &Actor,
    user_id: &str,
    key: &CheckedKey,
    name: &str,
    kind: &'static str,
) -> ApiResult<SshKey> {
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    if db::ssh_keys::count_for_user(&mut *tx, user_id).await? >= MAX_KEYS_PER_USER {
        return Err(ApiError::conflict(
            "too_many_ssh_keys",
            format!("a user may hold at most {MAX_KEYS_PER_USER} SSH keys: delete one first"),
        ));
    }
    let new = NewKey {
        user_id,
        name,
        key_type: &key.key_type,
        public_key: &key.line,
        fingerprint: &key.fingerprint,
    };
    let stored = match db::ssh_keys::insert(&mut *tx, new, now).await {
        Ok(k) => k,
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict(
                "ssh_key_exists",
                "this key is already registered for the user",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let event = NewEvent::success(kind)
        .user(user_id)
        .details(serde_json::json!({ "key_id": stored.id, "fingerprint": stored.fingerprint }));
    db::events::record(&mut *tx, actor, event, now).await?;
    tx.commit().await?;
    Ok(stored)
}

async fn add(
    state: &AppState,
    actor: &Actor,
    user_id: &str,
    req: AddKey,
) -> ApiResult<(StatusCode, Json<SshKey>)> {
    let key = check_public_key(&req.public_key)?;
    let name = key_name(req.name.as_deref(), &key.comment, &key.fingerprint)?;
    let stored = store_key(state, actor, user_id, &key, &name, "ssh_key.added").await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

async fn generate(
    state: &AppState,
    actor: &Actor,
    user_id: &str,
    username: &str,
    req: GenerateKey,
) -> ApiResult<(StatusCode, Json<GeneratedKey>)> {
    let comment = format!("{username}@cloud-cli-proxy");
    let mut private = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519)
        .map_err(|e| ApiError::internal(format_args!("key generation: {e}")))?;
    private.set_comment(comment.clone());
    let private_pem = private
        .to_openssh(LineEnding::LF)
        .map_err(|e| ApiError::internal(format_args!("key encoding: {e}")))?;
    let public_line = private
        .public_key()
        .to_openssh()
        .map_err(|e| ApiError::internal(format_args!("key encoding: {e}")))?;
    let key = check_public_key(&public_line)?;
    let name = key_name(req.name.as_deref(), &comment, &key.fingerprint)?;
    let stored = store_key(state, actor, user_id, &key, &name, "ssh_key.generated").await?;
    Ok((
        StatusCode::CREATED,
        Json(GeneratedKey {
            key: stored,
            private_key: private_pem.to_string(),
        }),
    ))
}

async fn remove(state: &AppState, actor: &Actor, user_id: &str, key_id: Uuid) -> ApiResult<StatusCode> {
    let now = UtcTime::now();
    let mut tx = state.db.begin().await?;
    if !db::ssh_keys::delete(&mut *tx, user_id, &key_id.to_string()).await? {
        return Err(ApiError::not_found("SSH key"));
    }
    let event = NewEvent::success("ssh_key.deleted")
        .user(user_id)
        .details(serde_json::json!({ "key_id": key_id }));
    db::events::record(&mut *tx, actor, event, now).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's SSH keys.
#[utoipa::path(get, path = "/v1/admin/users/{user_id}/ssh-keys", tag = "ssh-keys", security(("bearer" = [])),
    params(("user_id" = Uuid, Path), PageQuery),
    responses((status = 200, body = Paginated<SshKey>), (status = 404, body = crate::error::ErrorBody)))]
async fn admin_list(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(user_id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> ApiResult<Paginated<SshKey>> {
    let page = page.resolve()?;
    let user = super::users::tenant_or_404(&state, user_id).await?;
    let (rows, total) = db::ssh_keys::list_for_user(&state.db, &user.id, page).await?;
    Ok(Paginated::new(rows, page, total))
}

/// Adds a public key to a user.
#[utoipa::path(post, path = "/v1/admin/users/{user_id}/ssh-keys", tag = "ssh-keys", security(("bearer" = [])),
    params(("user_id" = Uuid, Path)), request_body = AddKey,
    responses((status = 201, body = SshKey), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "`too_many_ssh_keys` (the user holds 50 keys) or `ssh_key_exists`", body = crate::error::ErrorBody)))]
async fn admin_add(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(user_id): Path<Uuid>,
    Json(req): Json<AddKey>,
) -> ApiResult<(StatusCode, Json<SshKey>)> {
    let user = super::users::tenant_or_404(&state, user_id).await?;
    add(&state, &admin.actor(), &user.id, req).await
}

/// Generates an ed25519 key pair for a user; the private key is returned once and not kept.
#[utoipa::path(post, path = "/v1/admin/users/{user_id}/ssh-keys/generate", tag = "ssh-keys",
    security(("bearer" = [])), params(("user_id" = Uuid, Path)), request_body(content = Option<GenerateKey>),
    responses((status = 201, body = GeneratedKey), (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "`too_many_ssh_keys`: the user holds 50 keys", body = crate::error::ErrorBody)))]
async fn admin_generate(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(user_id): Path<Uuid>,
    body: Option<Json<GenerateKey>>,
) -> ApiResult<(StatusCode, Json<GeneratedKey>)> {
    let user = super::users::tenant_or_404(&state, user_id).await?;
    let req = body.map(|Json(b)| b).unwrap_or_default();
    generate(&state, &admin.actor(), &user.id, &user.username, req).await
}

/// Removes one of a user's keys.
#[utoipa::path(delete, path = "/v1/admin/users/{user_id}/ssh-keys/{key_id}", tag = "ssh-keys",
    security(("bearer" = [])), params(("user_id" = Uuid, Path), ("key_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
async fn admin_delete(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path((user_id, key_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    let user = super::users::tenant_or_404(&state, user_id).await?;
    remove(&state, &admin.actor(), &user.id, key_id).await
}

/// The caller's SSH keys.
#[utoipa::path(get, path = "/v1/user/ssh-keys", tag = "ssh-keys", security(("bearer" = [])),
    params(PageQuery), responses((status = 200, body = Paginated<SshKey>)))]
async fn own_list(
    State(state): State<AppState>,
    Tenant(me): Tenant,
    Query(page): Query<PageQuery>,
) -> ApiResult<Paginated<SshKey>> {
    let page = page.resolve()?;
    let (rows, total) = db::ssh_keys::list_for_user(&state.db, &me.user.id, page).await?;
    Ok(Paginated::new(rows, page, total))
}

/// Adds a public key to the caller's account.
#[utoipa::path(post, path = "/v1/user/ssh-keys", tag = "ssh-keys", security(("bearer" = [])),
    request_body = AddKey,
    responses((status = 201, body = SshKey), (status = 400, body = crate::error::ErrorBody),
              (status = 409, description = "`too_many_ssh_keys` (the user holds 50 keys) or `ssh_key_exists`", body = crate::error::ErrorBody)))]
async fn own_add(
    State(state): State<AppState>,
    Tenant(me): Tenant,
    Json(req): Json<AddKey>,
) -> ApiResult<(StatusCode, Json<SshKey>)> {
    add(&state, &me.actor(), &me.user.id, req).await
}

/// Generates an ed25519 key pair for the caller; the private key is returned once and not kept.
#[utoipa::path(post, path = "/v1/user/ssh-keys/generate", tag = "ssh-keys", security(("bearer" = [])),
    request_body(content = Option<GenerateKey>),
    responses((status = 201, body = GeneratedKey), (status = 409, description = "`too_many_ssh_keys`: the user holds 50 keys", body = crate::error::ErrorBody)))]
async fn own_generate(
    State(state): State<AppState>,
    Tenant(me): Tenant,
    body: Option<Json<GenerateKey>>,
) -> ApiResult<(StatusCode, Json<GeneratedKey>)> {
    let req = body.map(|Json(b)| b).unwrap_or_default();
    generate(&state, &me.actor(), &me.user.id, &me.user.username, req).await
}

/// Removes one of the caller's keys.
#[utoipa::path(delete, path = "/v1/user/ssh-keys/{key_id}", tag = "ssh-keys", security(("bearer" = [])),
    params(("key_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
async fn own_delete(
    State(state): State<AppState>,
    Tenant(me): Tenant,
    Path(key_id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    remove(&state, &me.actor(), &me.user.id, key_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ed25519_and_computes_the_fingerprint() {
        let private = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519).unwrap();
        let line = format!("{} me@laptop", private.public_key().to_openssh().unwrap().trim());
        let key = check_public_key(&line).unwrap();
        assert_eq!(key.key_type, "ssh-ed25519");
        assert!(key.fingerprint.starts_with("SHA256:"));
        assert_eq!(key.comment, "me@laptop");
        assert_eq!(
            key.fingerprint,
            private.public_key().fingerprint(HashAlg::Sha256).to_string()
        );
    }

    #[test]
    fn refuses_garbage_and_multi_line_input() {
        assert!(check_public_key("ssh-ed25519 AAAA... user@host").is_err());
        assert!(check_public_key("").is_err());
        assert!(check_public_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA\nssh-rsa x").is_err());
        assert!(check_public_key("command=\"rm -rf /\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5").is_err());
    }
}
