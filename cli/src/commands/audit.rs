//! The audit log, nodes, gateways and the counts of the dashboard (operator).

use crate::Ctx;
use crate::args::{EventsCmd, GatewaysCmd, NodesCmd, RecordingsCmd};
use crate::error::Result;
use crate::output::Column;

const EVENT_COLUMNS: &[Column] = &[
    ("TIME", "created_at"),
    ("TYPE", "type"),
    ("OUTCOME", "outcome"),
    ("ACTOR", "actor_name"),
    ("IP", "ip"),
    ("HOST", "host_id|8"),
    ("DETAILS", "details"),
];

const RECORDING_COLUMNS: &[Column] = &[
    ("STARTED", "started_at"),
    ("USER", "user_id|8"),
    ("HOST", "host_id|8"),
    ("VIA", "via"),
    ("DURATION MS", "duration_ms"),
    ("BYTES", "size_bytes"),
    ("STORED", "stored_bytes"),
    ("ERROR", "error"),
    ("ID", "id"),
];

const NODE_COLUMNS: &[Column] = &[
    ("NAME", "name"),
    ("CONNECTED", "connected"),
    ("HOSTS", "hosts"),
    ("AGENT", "agent_version"),
    ("REACH ADDRESS", "reach_address"),
    ("LAST SEEN", "last_seen_at"),
    ("ID", "id"),
];

const GATEWAY_COLUMNS: &[Column] = &[
    ("NAME", "name"),
    ("CONNECTED", "connected"),
    ("ENROLLED", "enrolled"),
    ("KEY", "client_key_fingerprint"),
    ("LAST SEEN", "last_seen_at"),
];

pub fn events(ctx: &Ctx, cmd: EventsCmd) -> Result<()> {
    let api = &ctx.api;
    let EventsCmd::List {
        user,
        host,
        since,
        until,
        kind,
        page,
    } = cmd;
    let user = user.map(|u| super::user_id(api, &u)).transpose()?;
    let host = host.map(|h| super::host_id(api, &h)).transpose()?;
    let q = super::query(
        page,
        &[
            ("user_id", &user),
            ("host_id", &host),
            ("since", &since),
            ("until", &until),
            ("type", &kind),
        ],
    );
    ctx.out.page(&api.get("/v1/admin/events", &q)?, EVENT_COLUMNS)
}

pub fn recordings(ctx: &Ctx, cmd: RecordingsCmd) -> Result<()> {
    let api = &ctx.api;
    match cmd {
        RecordingsCmd::List {
            user,
            host,
            since,
            until,
            page,
        } => {
            let user = user.map(|u| super::user_id(api, &u)).transpose()?;
            let host = host.map(|h| super::host_id(api, &h)).transpose()?;
            let q = super::query(
                page,
                &[
                    ("user_id", &user),
                    ("host_id", &host),
                    ("since", &since),
                    ("until", &until),
                ],
            );
            ctx.out
                .page(&api.get("/v1/admin/recordings", &q)?, RECORDING_COLUMNS)
        }
        RecordingsCmd::Cast { recording_id } => {
            if !super::is_uuid(&recording_id) {
                return Err(crate::error::Error::local(
                    "invalid_id",
                    "a recording is named by its id (see `recordings list`)",
                ));
            }
            crate::output::write_out(&api.text(&format!("/v1/admin/recordings/{recording_id}/cast"))?)
        }
        RecordingsCmd::Set {
            user,
            host,
            recording,
        } => {
            let path = match (user, host) {
                (Some(u), _) => format!("/v1/admin/users/{}/recording", super::user_id(api, &u)?),
                (None, Some(h)) => format!("/v1/admin/hosts/{}/recording", super::host_id(api, &h)?),
                (None, None) => {
                    return Err(crate::error::Error::local("usage", "name --user or --host"));
                }
            };
            let answer = match recording {
                Some(mode) => api.send(
                    reqwest::Method::PUT,
                    &path,
                    Some(&serde_json::json!({ "recording": mode })),
                )?,
                None => api.get(&path, &[])?,
            };
            ctx.out.object(&answer)
        }
    }
}

pub fn nodes(ctx: &Ctx, cmd: NodesCmd) -> Result<()> {
    let NodesCmd::List { page } = cmd;
    let list = ctx.api.get("/v1/admin/nodes", &super::query(page, &[]))?;
    ctx.out.page(&list, NODE_COLUMNS)
}

pub fn gateways(ctx: &Ctx, cmd: GatewaysCmd) -> Result<()> {
    let GatewaysCmd::List { page } = cmd;
    let list = ctx.api.get("/v1/admin/gateways", &super::query(page, &[]))?;
    ctx.out.page(&list, GATEWAY_COLUMNS)
}

pub fn stats(ctx: &Ctx) -> Result<()> {
    ctx.out.object(&ctx.api.get("/v1/admin/dashboard/stats", &[])?)
}
