//! Accounts (operator) and SSH keys (the caller's own, or a user's for the operator).

use std::os::unix::fs::OpenOptionsExt as _;

use reqwest::Method;
use serde_json::{Value, json};

use crate::Ctx;
use crate::args::{SshKeysCmd, UsersCmd};
use crate::client::Role;
use crate::error::{Error, Result};
use crate::output::{self, Column};
use crate::prompt;

const USER_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("USERNAME", "username"),
    ("ROLE", "role"),
    ("STATUS", "status"),
    ("EXPIRES", "expires_at"),
    ("TOTP", "totp_enabled"),
    ("CREATED", "created_at"),
];

const KEY_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("TYPE", "key_type"),
    ("FINGERPRINT", "fingerprint"),
    ("CREATED", "created_at"),
];

pub fn users(ctx: &Ctx, cmd: UsersCmd) -> Result<()> {
    let api = &ctx.api;
    let user_path =
        |user: &str| -> Result<String> { Ok(format!("/v1/admin/users/{}", super::user_id(api, user)?)) };
    match cmd {
        UsersCmd::List { status, search, page } => {
            let q = super::query(page, &[("status", &status), ("q", &search)]);
            ctx.out.page(&api.get("/v1/admin/users", &q)?, USER_COLUMNS)
        }
        UsersCmd::Show { user } => ctx.out.object(&api.get(&user_path(&user)?, &[])?),
        UsersCmd::Create {
            username,
            password_stdin,
            expires_at,
        } => {
            let password = if password_stdin {
                prompt::stdin_line("password")?
            } else {
                let first = prompt::secret(&format!("Password for {username}: "), "password")?;
                let again = prompt::secret("Again: ", "password")?;
                if first != again {
                    return Err(Error::usage("the two passwords differ"));
                }
                first
            };
            let mut body = json!({ "username": username, "password": password });
            if let Some(t) = expires_at {
                body["expires_at"] = t.into();
            }
            ctx.out.object(&api.post("/v1/admin/users", Some(&body))?)
        }
        UsersCmd::Enable { user } => set_status(ctx, &user_path(&user)?, "active"),
        UsersCmd::Disable { user } => set_status(ctx, &user_path(&user)?, "disabled"),
        UsersCmd::Delete { user } => {
            let path = user_path(&user)?;
            api.delete(&path)?;
            ctx.out.done(
                &Value::Null,
                &format!("user {user} deleted; their hosts are being removed"),
            )
        }
        UsersCmd::RotatePassword { user } => {
            let answer = api.post(&format!("{}/rotate-password", user_path(&user)?), None)?;
            ctx.out.object(&answer)?;
            if !ctx.out.json {
                output::note("the password is shown only now");
            }
            Ok(())
        }
        UsersCmd::Expiry { user, at, never: _ } => {
            let body = json!({ "expires_at": at });
            let path = format!("{}/expiry", user_path(&user)?);
            ctx.out.object(&api.send(Method::PUT, &path, Some(&body))?)
        }
        UsersCmd::ResetTotp { user } => {
            api.delete(&format!("{}/totp", user_path(&user)?))?;
            ctx.out
                .done(&Value::Null, &format!("the second factor of {user} is removed"))
        }
    }
}

fn set_status(ctx: &Ctx, path: &str, status: &str) -> Result<()> {
    let body = json!({ "status": status });
    ctx.out.object(&ctx.api.send(Method::PATCH, path, Some(&body))?)
}

/// `/v1/admin/users/{id}/ssh-keys` with --user (operator), else the caller's own
/// `/v1/user/ssh-keys`.
fn keys_path(ctx: &Ctx, user: Option<&str>) -> Result<String> {
    match (user, ctx.api.role()?) {
        (Some(user), _) => Ok(format!(
            "/v1/admin/users/{}/ssh-keys",
            super::user_id(&ctx.api, user)?
        )),
        (None, Role::User) => Ok("/v1/user/ssh-keys".to_owned()),
        (None, Role::Admin) => Err(Error::usage(
            "the operator's account has no keys of its own: name a user with --user",
        )),
    }
}

/// The OpenSSH line from the argument, a file, or standard input (`-`).
fn public_key(arg: &str) -> Result<String> {
    let text = if arg == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else if !arg.contains(' ') && std::path::Path::new(arg).is_file() {
        std::fs::read_to_string(arg).map_err(|e| Error::local("io", format!("{arg}: {e}")))?
    } else {
        arg.to_owned()
    };
    Ok(text.trim().to_owned())
}

pub fn ssh_keys(ctx: &Ctx, cmd: SshKeysCmd) -> Result<()> {
    let api = &ctx.api;
    match cmd {
        SshKeysCmd::List { user, page } => {
            let path = keys_path(ctx, user.as_deref())?;
            ctx.out
                .page(&api.get(&path, &super::query(page, &[]))?, KEY_COLUMNS)
        }
        SshKeysCmd::Add { key, name, user } => {
            let path = keys_path(ctx, user.as_deref())?;
            let mut body = json!({ "public_key": public_key(&key)? });
            if let Some(name) = name {
                body["name"] = name.into();
            }
            ctx.out.object(&api.post(&path, Some(&body))?)
        }
        SshKeysCmd::Generate { name, user, out } => {
            let path = format!("{}/generate", keys_path(ctx, user.as_deref())?);
            let body = name.map(|n| json!({ "name": n }));
            let mut made = api.post(&path, body.as_ref())?;
            let Some(file) = out else {
                ctx.out.object(&made)?;
                if !ctx.out.json {
                    output::note("the private key is shown only now");
                }
                return Ok(());
            };
            let private = made["private_key"].as_str().unwrap_or_default().to_owned();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .map_err(|e| Error::local("io", format!("{}: {e}", file.display())))?;
            std::io::Write::write_all(&mut f, private.as_bytes())?;
            if let Some(obj) = made.as_object_mut() {
                obj.remove("private_key");
            }
            ctx.out.object(&made)?;
            if !ctx.out.json {
                output::note(&format!("private key written to {}", file.display()));
            }
            Ok(())
        }
        SshKeysCmd::Delete { key_id, user } => {
            let path = format!("{}/{key_id}", keys_path(ctx, user.as_deref())?);
            api.delete(&path)?;
            ctx.out.done(&Value::Null, &format!("key {key_id} deleted"))
        }
    }
}
