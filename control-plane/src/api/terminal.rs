//! The terminal's WebSocket: `/v1/{admin,user}/hosts/{host_id}/terminal` (see `crate::terminal`).
//!
//! Protocol `ccp-terminal.v1`. The browser's first message is text, one of
//! `{"type":"open","cols":…,"rows":…}` or `{"type":"resume","session":…,"offset":…,"cols":…,"rows":…}`
//! (`offset`: bytes of output it has received); the server answers `{"type":"ready","session":…,
//! "offset":…}` (where the output it sends next starts; later than asked when that part is gone),
//! then binary messages carry the shell's bytes both ways, the browser sends
//! `{"type":"resize","cols":…,"rows":…}` when its size changes, and the server ends with
//! `{"type":"exit","status":…}` or `{"type":"error","code":…,"message":…}`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts as _, Request, State};
use axum::http::header;
use axum::response::Response;
use futures::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;
use crate::auth::{self, Admin, Principal, Tenant};
use crate::db;
use crate::db::hosts::{Host, HostStatus};
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::terminal::{self, Exit, Input, Login, Shell};

/// How long a browser may take to send its first message.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest output message sent to a browser.
const FRAME_BYTES: usize = 64 << 10;
/// Largest input message accepted from a browser (a paste).
const INPUT_BYTES: usize = 1 << 20;

#[derive(Debug, Deserialize)]
struct HostParam {
    host_id: Uuid,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(admin_terminal))
        .routes(routes!(user_terminal))
}

/// A shell on the host in the browser (operator): WebSocket, subprotocol `ccp-terminal.v1`, logged
/// in through the SSH gateway as the host's owner and recorded as a web session.
#[utoipa::path(get, path = "/v1/admin/hosts/{host_id}/terminal", tag = "terminal",
    security(("bearer" = []), ("session_cookie" = [])), params(("host_id" = Uuid, Path)),
    responses((status = 101, description = "WebSocket, subprotocol `ccp-terminal.v1`"),
              (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)))]
async fn admin_terminal(
    State(state): State<AppState>,
    Path(HostParam { host_id }): Path<HostParam>,
    req: Request,
) -> ApiResult<Response> {
    let (mut parts, _) = req.into_parts();
    let Admin(principal) = Admin::from_request_parts(&mut parts, &state).await?;
    let host = db::hosts::get(&state.db, &host_id.to_string()).await?;
    upgrade(state, parts, principal, host).await
}

/// A shell on one of the caller's hosts in the browser: WebSocket, subprotocol `ccp-terminal.v1`.
#[utoipa::path(get, path = "/v1/user/hosts/{host_id}/terminal", tag = "terminal",
    security(("bearer" = []), ("session_cookie" = [])), params(("host_id" = Uuid, Path)),
    responses((status = 101, description = "WebSocket, subprotocol `ccp-terminal.v1`"),
              (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)))]
async fn user_terminal(
    State(state): State<AppState>,
    Path(HostParam { host_id }): Path<HostParam>,
    req: Request,
) -> ApiResult<Response> {
    let (mut parts, _) = req.into_parts();
    let Tenant(principal) = Tenant::from_request_parts(&mut parts, &state).await?;
    let host = db::hosts::get_owned(&state.db, &host_id.to_string(), &principal.user.id).await?;
    upgrade(state, parts, principal, host).await
}

/// Every check that can be a plain JSON error happens before the upgrade.
async fn upgrade(
    state: AppState,
    mut parts: axum::http::request::Parts,
    principal: Principal,
    host: Option<Host>,
) -> ApiResult<Response> {
    let host = host.ok_or_else(|| ApiError::not_found("host"))?;
    auth::browser::check_websocket_origin(&parts.headers, &state.settings.public_base_url)?;
    let slot = state.live.open(&principal.user.id)?;
    let offered = parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == terminal::PROTOCOL);
    if !offered {
        return Err(ApiError::bad_request(
            "bad_subprotocol",
            format!("ask for the WebSocket subprotocol `{}`", terminal::PROTOCOL),
        ));
    }
    if !state.terminals.available() {
        return Err(ApiError::unavailable(
            "terminal_unavailable",
            "no SSH gateway is configured for the terminal (TERMINAL_GATEWAY_ADDR)",
        ));
    }
    if host.status != HostStatus::Running {
        return Err(ApiError::conflict(
            "host_not_running",
            format!("the host is {}; start it first", host.status.as_str()),
        ));
    }
    let owner = match &host.user_id {
        Some(id) => db::users::get(&state.db, id).await?,
        None => None,
    };
    let owner = owner.ok_or_else(|| {
        ApiError::conflict("host_has_no_owner", "the host has no owner account to log in as")
    })?;
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &state)
        .await
        .map_err(|r| ApiError::bad_request("bad_request", r.body_text()))?;
    let login = Login {
        host_id: host.id.clone(),
        short_id: host.short_id.clone(),
        user_id: owner.id.clone(),
        username: owner.username.clone(),
        client_ip: principal.ip.map(|ip| ip.to_string()),
        opened_by_id: principal.user.id.clone(),
        opened_by: principal.user.username.clone(),
    };
    Ok(ws
        .protocols([terminal::PROTOCOL])
        .max_message_size(INPUT_BYTES)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            serve(state, socket, login).await;
        }))
}

/// The browser's first message.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Hello {
    Open {
        cols: u32,
        rows: u32,
    },
    Resume {
        session: String,
        #[serde(default)]
        offset: u64,
        cols: u32,
        rows: u32,
    },
}

/// Later control messages from the browser.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    Resize { cols: u32, rows: u32 },
}

fn size_ok(cols: u32, rows: u32) -> bool {
    (1..=terminal::MAX_COLS).contains(&cols) && (1..=terminal::MAX_ROWS).contains(&rows)
}

async fn refuse(mut socket: WebSocket, code: &str, message: &str) {
    let body = serde_json::json!({ "type": "error", "code": code, "message": message });
    let _ = socket.send(Message::Text(body.to_string().into())).await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 4000,
            reason: code.to_owned().into(),
        })))
        .await;
}

async fn serve(state: AppState, mut socket: WebSocket, login: Login) {
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<Hello>(&text).ok(),
        _ => None,
    };
    let Some(hello) = hello else {
        return refuse(
            socket,
            "bad_request",
            "the first message must be an open or resume request",
        )
        .await;
    };
    let (shell, offset, size) = match hello {
        Hello::Open { cols, rows } => {
            if !size_ok(cols, rows) {
                return refuse(socket, "bad_request", "cols and rows out of range").await;
            }
            if state.terminals.count_of(&login.opened_by_id) >= terminal::MAX_PER_ACCOUNT {
                let message = format!(
                    "at most {} terminals per account; close one first",
                    terminal::MAX_PER_ACCOUNT
                );
                return refuse(socket, "too_many_terminals", &message).await;
            }
            let opened = state
                .terminals
                .open(&state.db, login.clone(), cols, rows, state.stopping.clone())
                .await;
            match opened {
                Ok(shell) => (shell, 0, None),
                Err(e) => {
                    tracing::warn!(error = %e, host_id = %login.host_id, "terminal not opened");
                    let message = match &e {
                        terminal::OpenError::Db(_) => "internal error".to_owned(),
                        other => other.to_string(),
                    };
                    return refuse(socket, e.code(), &message).await;
                }
            }
        }
        Hello::Resume {
            session,
            offset,
            cols,
            rows,
        } => {
            let found = state
                .terminals
                .find(&session, &login.opened_by_id, &login.host_id);
            match found {
                Some(shell) if size_ok(cols, rows) => (shell, offset, Some((cols, rows))),
                Some(_) => return refuse(socket, "bad_request", "cols and rows out of range").await,
                None => {
                    return refuse(socket, "session_gone", "that shell has ended; open a new one").await;
                }
            }
        }
    };
    if let Some((cols, rows)) = size {
        shell.send(Input::Resize { cols, rows }).await;
    }
    attach(shell, socket, offset).await;
}

/// Sends the shell's output from `offset` and the browser's input to the shell until either side
/// ends or a newer browser takes the shell over.
async fn attach(shell: Arc<Shell>, socket: WebSocket, offset: u64) {
    let (n, mut changed) = shell.attach();
    let (mut sink, mut stream) = socket.split();
    let first = shell.read(offset, 0);
    let ready = serde_json::json!({ "type": "ready", "session": shell.id, "offset": first.from });
    if sink.send(Message::Text(ready.to_string().into())).await.is_err() {
        shell.detach(n);
        return;
    }
    let mut cursor = first.from;
    loop {
        if !shell.is_current(n) {
            let msg = serde_json::json!({ "type": "error", "code": "taken_over",
                "message": "this shell was opened in another window" });
            let _ = sink.send(Message::Text(msg.to_string().into())).await;
            let _ = sink.send(Message::Close(None)).await;
            return;
        }
        let chunk = shell.read(cursor, FRAME_BYTES);
        if !chunk.data.is_empty() {
            cursor = chunk.from + chunk.data.len() as u64;
            if sink.send(Message::Binary(chunk.data.into())).await.is_err() {
                break;
            }
            continue;
        }
        if let Some(exit) = chunk.exit {
            let msg = match exit {
                Exit::Status(status) => serde_json::json!({ "type": "exit", "status": status }),
                Exit::Closed(why) => serde_json::json!({ "type": "error", "code": "closed", "message": why }),
            };
            let _ = sink.send(Message::Text(msg.to_string().into())).await;
            let _ = sink.send(Message::Close(None)).await;
            return;
        }
        tokio::select! {
            changed = changed.changed() => if changed.is_err() {
                break;
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    if !shell.send(Input::Data(data)).await {
                        // The shell is ending; its exit arrives through `changed`.
                        continue;
                    }
                }
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<Control>(&text) {
                    Ok(Control::Resize { cols, rows }) if size_ok(cols, rows) => {
                        shell.send(Input::Resize { cols, rows }).await;
                    }
                    _ => tracing::debug!(session = %shell.id, "ignored a terminal control message"),
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            },
        }
    }
    shell.detach(n);
}
