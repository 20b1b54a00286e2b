//! Signing in and out, the signed-in account, and its API tokens.

use serde_json::{Value, json};

use crate::Ctx;
use crate::args::{ApiTokensCmd, LoginArgs};
use crate::client::{self, Api};
use crate::config::{self, Credentials};
use crate::error::{Error, Result};
use crate::output::{self, Output};
use crate::prompt;

/// `login`: asks what is missing, signs in (with the second factor when the account has one) and
/// stores the token.
pub fn login(
    global_url: &Option<String>,
    ca_file: Option<&std::path::Path>,
    out: Output,
    args: LoginArgs,
) -> Result<()> {
    let url = match (&args.login_url, global_url) {
        (Some(u), _) | (None, Some(u)) => u.clone(),
        (None, None) => match config::load()? {
            Some(c) => c.url,
            None => prompt::line("Control plane URL: ", "URL")?,
        },
    };
    let url = client::normalize_url(&url)?;
    let username = match &args.username {
        Some(u) => u.clone(),
        None => prompt::line("Username: ", "username")?,
    };
    let password = if args.password_stdin {
        prompt::stdin_line("password")?
    } else {
        prompt::secret("Password: ", "password")?
    };
    let anonymous = Api::new(&url, None, None, ca_file)?;
    let mut body = json!({ "username": username, "password": password });
    if let Some(code) = &args.totp {
        body["totp_code"] = code.trim().into();
    }
    let answer = match anonymous.login(&body) {
        Err(e) if e.code == "totp_required" && args.totp.is_none() => {
            if !prompt::has_tty() {
                return Err(Error::new(
                    e.exit,
                    &e.code,
                    "this account has a second factor: pass --totp CODE",
                ));
            }
            body["totp_code"] = prompt::line("Authenticator code: ", "code")?.into();
            anonymous.login(&body)?
        }
        other => other?,
    };
    let token = answer["token"]
        .as_str()
        .ok_or_else(|| Error::local("bad_response", "the sign-in answer has no token"))?;
    let role = answer["role"].as_str().unwrap_or_default().to_owned();
    let creds = Credentials {
        url: url.clone(),
        token: token.to_owned(),
        username: username.clone(),
        role: role.clone(),
        expires_at: answer["expires_at"].as_str().map(str::to_owned),
    };
    let path = config::save(&creds)?;
    if out.json {
        let api = Api::new(&url, Some(token.to_owned()), client::Role::parse(&role), ca_file)?;
        return out.json(&api.get("/v1/auth/me", &[])?);
    }
    let until = creds
        .expires_at
        .as_deref()
        .map(|t| format!(" until {}", output::cell(&json!(t))))
        .unwrap_or_default();
    output::write_out(&format!(
        "signed in to {url} as {username} ({role}){until}; token stored in {}\n",
        path.display()
    ))
}

pub fn logout(out: Output) -> Result<()> {
    let removed = config::remove()?;
    if std::env::var_os("CLOUD_CLI_PROXY_TOKEN").is_some() {
        output::note("note: CLOUD_CLI_PROXY_TOKEN is set and still signs you in");
    }
    let text = if removed {
        "signed out: the stored token is removed"
    } else {
        "not signed in: nothing to remove"
    };
    out.done(&json!({ "removed": removed }), text)
}

pub fn whoami(ctx: &Ctx) -> Result<()> {
    let me = ctx.api.get("/v1/auth/me", &[])?;
    if ctx.out.json {
        return ctx.out.json(&me);
    }
    ctx.out.object(&me)?;
    output::note(&format!("at {}", ctx.api.base()));
    Ok(())
}

/// `password`: changes the caller's password, then signs in again with it when the token is the
/// stored one (the change ends every session, this one too).
pub fn password(ctx: &Ctx, from_stdin: bool) -> Result<()> {
    let (old, new) = if from_stdin {
        (
            prompt::stdin_line("current password")?,
            prompt::stdin_line("new password")?,
        )
    } else {
        let old = prompt::secret("Current password: ", "password")?;
        let new = prompt::secret("New password: ", "password")?;
        if prompt::secret("Again: ", "password")? != new {
            return Err(Error::usage("the two new passwords differ"));
        }
        (old, new)
    };
    let body = json!({ "old_password": old, "new_password": new });
    ctx.api.post("/v1/user/change-password", Some(&body))?;
    let stored = config::load()?
        .filter(|c| c.url == ctx.api.base() && std::env::var_os("CLOUD_CLI_PROXY_TOKEN").is_none());
    let Some(mut creds) = stored else {
        return ctx.out.done(
            &Value::Null,
            "password changed; every session of the account has ended",
        );
    };
    let anonymous = Api::new(&creds.url, None, None, None)?;
    let renewed = anonymous.login(&json!({ "username": creds.username, "password": new }));
    let answer = match renewed {
        Ok(answer) => answer,
        Err(e) => {
            config::remove()?;
            return Err(Error::new(
                e.exit,
                &e.code,
                format!(
                    "password changed, but signing in again failed ({}): run `cloud-cli-proxy login`",
                    e.message
                ),
            ));
        }
    };
    creds.token = answer["token"].as_str().unwrap_or_default().to_owned();
    creds.expires_at = answer["expires_at"].as_str().map(str::to_owned);
    config::save(&creds)?;
    ctx.out
        .done(&Value::Null, "password changed; signed in again with it")
}

const TOKEN_COLUMNS: &[output::Column] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("PREFIX", "prefix"),
    ("SCOPE", "scope"),
    ("CREATED", "created_at"),
    ("EXPIRES", "expires_at"),
    ("LAST USED", "last_used_at"),
];

pub fn api_tokens(ctx: &Ctx, cmd: ApiTokensCmd) -> Result<()> {
    let api = &ctx.api;
    match cmd {
        ApiTokensCmd::List { page } => {
            let list = api.get("/v1/auth/api-tokens", &super::query(page, &[]))?;
            ctx.out.page(&list, TOKEN_COLUMNS)
        }
        ApiTokensCmd::Create {
            name,
            expires_in_days,
            scope,
        } => {
            let mut body = json!({ "name": name });
            if let Some(days) = expires_in_days {
                body["expires_in_days"] = days.into();
            }
            if let Some(scope) = scope {
                body["scope"] = scope.into();
            }
            let made = api.post("/v1/auth/api-tokens", Some(&body))?;
            ctx.out.object(&made)?;
            if !ctx.out.json {
                output::note("the token is shown only now: keep it (CLOUD_CLI_PROXY_TOKEN takes it)");
            }
            Ok(())
        }
        ApiTokensCmd::Delete { token_id } => {
            api.delete(&format!("/v1/auth/api-tokens/{token_id}"))?;
            ctx.out.done(&Value::Null, &format!("token {token_id} revoked"))
        }
    }
}
