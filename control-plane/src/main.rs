//! `cloud-cli-proxy-control-plane`: parse configuration, start logging, bind, serve.

use std::process::ExitCode;

use clap::Parser;
use control_plane::config::Command;
use control_plane::{Config, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(line) = telemetry::init(config.log_format, &config.log_level) {
        eprintln!("cloud-cli-proxy-control-plane: {line}");
        return ExitCode::from(2);
    }
    if let Some(Command::RotateSecretsKey) = config.command {
        return rotate_secrets_key(&config).await;
    }
    // Checked before binding so a bad secret never leaves a half-started server behind.
    if let Err(line) = config.checked_jwt_secret() {
        eprintln!("cloud-cli-proxy-control-plane: {line}");
        return ExitCode::from(2);
    }
    if let Err(line) = config.tls_files() {
        eprintln!("cloud-cli-proxy-control-plane: {line}");
        return ExitCode::from(2);
    }
    let listener = match tokio::net::TcpListener::bind(config.listen.0).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "cloud-cli-proxy-control-plane: cannot listen on {}: {e}",
                config.listen
            );
            return ExitCode::from(2);
        }
    };
    match control_plane::run(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloud-cli-proxy-control-plane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `rotate-secrets-key`: one line on stdout saying what changed, or one line on stderr saying why not.
#[expect(clippy::print_stdout, reason = "the command's answer is its output")]
async fn rotate_secrets_key(config: &Config) -> ExitCode {
    let path = config.secrets_key_path();
    let result = async {
        let db = control_plane::db::connect(&config.database_url)
            .await
            .map_err(|e| e.to_string())?;
        let rotated = control_plane::secrets::rotate(&db, &path)
            .await
            .map_err(|e| e.to_string());
        db.close().await;
        rotated
    }
    .await;
    match result {
        Ok(r) => {
            println!(
                "rotated the secrets key {} -> {} ({} values re-sealed); {} now holds the new key",
                r.old_key_id,
                r.new_key_id,
                r.moved,
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(line) => {
            eprintln!("cloud-cli-proxy-control-plane: rotate-secrets-key: {line}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
