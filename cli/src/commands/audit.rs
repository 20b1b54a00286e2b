//! The audit log, nodes, gateways and the counts of the dashboard (operator).

use crate::Ctx;
use crate::args::{EventsCmd, GatewaysCmd, NodesCmd};
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
