//! Egress IPs and the bindings of hosts to them (operator).

use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::Ctx;
use crate::args::{BindingsCmd, EgressCmd, EgressFields};
use crate::error::{Error, Result, exit};
use crate::output::{self, Column};

const EGRESS_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("LABEL", "label"),
    ("IP ADDRESS", "ip_address"),
    ("TUNNEL", "tunnel_type"),
    ("PROVIDER", "provider"),
    ("OBSERVED", "observed_ip"),
    ("LAST TEST", "last_test.passed"),
    ("BOUND", "bound_hosts"),
];

const BINDING_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("HOST", "host_id|8"),
    ("EGRESS IP", "egress_ip_id|8"),
    ("WG PUBLIC KEY", "wg_public_key"),
    ("WG PEER ADDRESS", "wg_peer_address"),
    ("CREATED", "created_at"),
];

const CHECK_COLUMNS: &[Column] = &[
    ("CHECK", "name"),
    ("STATUS", "status"),
    ("LATENCY MS", "latency_ms"),
    ("OBSERVED", "observed"),
    ("ERROR", "error"),
];

/// The request body of the fields given.
fn egress_body(f: EgressFields) -> Result<Value> {
    let mut body = Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            body.insert(k.to_owned(), v.into());
        }
    };
    put("label", f.label);
    put("ip_address", f.ip_address);
    put("tunnel_type", f.tunnel_type);
    put("provider", f.provider);
    put("dns_server", f.dns_server);
    put("wg_endpoint", f.wg_endpoint);
    put("wg_public_key", f.wg_public_key);
    put("wg_preshared_key", f.wg_preshared_key);
    put("wg_allowed_ips", f.wg_allowed_ips);
    put("wg_dns_server", f.wg_dns_server);
    put("wg_peer_address", f.wg_peer_address);
    if let Some(config) = f.proxy_config {
        let text = match config.strip_prefix('@') {
            Some(file) => {
                std::fs::read_to_string(file).map_err(|e| Error::local("io", format!("{file}: {e}")))?
            }
            None => config,
        };
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| Error::usage(format!("--proxy-config is not JSON: {e}")))?;
        body.insert("proxy_config".to_owned(), value);
    }
    Ok(Value::Object(body))
}

pub fn egress_ips(ctx: &Ctx, cmd: EgressCmd) -> Result<()> {
    let api = &ctx.api;
    let path = |egress: &str| -> Result<String> {
        Ok(format!("/v1/admin/egress-ips/{}", super::egress_id(api, egress)?))
    };
    match cmd {
        EgressCmd::List { tunnel_type, page } => {
            let q = super::query(page, &[("tunnel_type", &tunnel_type)]);
            ctx.out
                .page(&api.get("/v1/admin/egress-ips", &q)?, EGRESS_COLUMNS)
        }
        EgressCmd::Show { egress } => ctx.out.object(&api.get(&path(&egress)?, &[])?),
        EgressCmd::Create(fields) => {
            let body = egress_body(fields)?;
            ctx.out.object(&api.post("/v1/admin/egress-ips", Some(&body))?)
        }
        EgressCmd::Update { egress, fields } => {
            let body = egress_body(fields)?;
            if body.as_object().is_some_and(Map::is_empty) {
                return Err(Error::usage("nothing to change: give at least one field"));
            }
            ctx.out
                .object(&api.send(Method::PUT, &path(&egress)?, Some(&body))?)
        }
        EgressCmd::Delete { egress } => {
            api.delete(&path(&egress)?)?;
            ctx.out.done(&Value::Null, &format!("egress IP {egress} deleted"))
        }
        EgressCmd::Test { egress } => {
            output::note("testing through the tunnel (up to 30 s)…");
            let result = api.post(&format!("{}/test", path(&egress)?), None)?;
            if ctx.out.json {
                ctx.out.json(&result)?;
            } else {
                let checks = result["checks"].as_array().cloned().unwrap_or_default();
                output::write_out(&format!("{}\n", output::table(&checks, CHECK_COLUMNS)))?;
                let verdict = if result["passed"] == json!(true) {
                    "passed"
                } else {
                    "FAILED"
                };
                output::write_out(&format!(
                    "{verdict}: declared {}, observed {} ({} ms)\n",
                    output::cell(&result["declared_ip"]),
                    output::cell(&result["observed_ip"]),
                    output::cell(&result["duration_ms"]),
                ))?;
            }
            if result["passed"] == json!(true) {
                Ok(())
            } else {
                Err(Error::new(
                    exit::TASK_FAILED,
                    "test_failed",
                    "the egress test failed",
                ))
            }
        }
        EgressCmd::RotateWgKey { egress } => ctx
            .out
            .object(&api.post(&format!("{}/rotate-wg-key", path(&egress)?), None)?),
    }
}

pub fn bindings(ctx: &Ctx, cmd: BindingsCmd) -> Result<()> {
    let api = &ctx.api;
    match cmd {
        BindingsCmd::List {
            host,
            egress_ip,
            page,
        } => {
            let host = host.map(|h| super::host_id(api, &h)).transpose()?;
            let egress = egress_ip.map(|e| super::egress_id(api, &e)).transpose()?;
            let q = super::query(page, &[("host_id", &host), ("egress_ip_id", &egress)]);
            ctx.out.page(&api.get("/v1/admin/bindings", &q)?, BINDING_COLUMNS)
        }
        BindingsCmd::Show { binding_id } => ctx
            .out
            .object(&api.get(&format!("/v1/admin/bindings/{binding_id}"), &[])?),
        BindingsCmd::Create {
            host,
            egress_ip,
            wg_peer_address,
        } => {
            let mut body = json!({
                "host_id": super::host_id(api, &host)?,
                "egress_ip_id": super::egress_id(api, &egress_ip)?,
            });
            if let Some(a) = wg_peer_address {
                body["wg_peer_address"] = a.into();
            }
            let made = api.post("/v1/admin/bindings", Some(&body))?;
            ctx.out.object(&made)?;
            if !ctx.out.json {
                output::note("the binding takes effect at the host's next start");
            }
            Ok(())
        }
        BindingsCmd::Delete { binding_id } => {
            api.delete(&format!("/v1/admin/bindings/{binding_id}"))?;
            ctx.out
                .done(&Value::Null, &format!("binding {binding_id} deleted"))
        }
        BindingsCmd::RotateWgKey { binding_id } => ctx
            .out
            .object(&api.post(&format!("/v1/admin/bindings/{binding_id}/rotate-wg-key"), None)?),
    }
}
