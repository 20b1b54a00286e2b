//! `cloud-cli-proxy-control-plane`: parse configuration, start logging, bind, serve.

use std::process::ExitCode;

use clap::Parser;
use control_plane::config::{Command, CopyDatabase};
use control_plane::{Config, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(line) = telemetry::init(config.log_format, &config.log_level) {
        eprintln!("cloud-cli-proxy-control-plane: {line}");
        return ExitCode::from(2);
    }
    match &config.command {
        Some(Command::RotateSecretsKey) => return rotate_secrets_key(&config).await,
        Some(Command::CopyDatabase(args)) => return copy_database(&config, args).await,
        None => {}
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

/// `copy-database`: progress on stderr, one summary line on stdout, or one line on stderr saying
/// why not, with the exit status of [`control_plane::db::copy::Error::exit_status`] (5: a control
/// plane holds the source's key file, so it is running on the source).
#[expect(clippy::print_stdout, reason = "the command's answer is its output")]
async fn copy_database(config: &Config, args: &CopyDatabase) -> ExitCode {
    use control_plane::db::copy::{self, Progress};
    let fail = |code: u8, line: &dyn std::fmt::Display| {
        eprintln!("cloud-cli-proxy-control-plane: copy-database: {line}");
        ExitCode::from(code)
    };
    // A server on the source keeps writing after the snapshot is read: it must be stopped. Every
    // server holds a shared lock on its key file; taking it alone proves none runs.
    let key_path = Config {
        database_url: args.from.clone(),
        ..config.clone()
    }
    .secrets_key_path();
    let _alone = match control_plane::secrets::keyfile::lock(&key_path, true) {
        Ok(file) => Some(file),
        Err(control_plane::secrets::KeyFileError::InUse { .. }) => {
            return fail(
                5,
                &format!(
                    "a control plane is running on the source (it holds {}): stop it first",
                    key_path.display()
                ),
            );
        }
        // No key file: nothing was ever sealed, or it lives elsewhere; the copy needs none.
        Err(_) => None,
    };
    let options = copy::Options {
        from: args.from.clone(),
        to: args.to.clone(),
        batch_rows: args.batch_rows,
        samples: args.sample_rows,
    };
    let mut report = |p: Progress<'_>| match p {
        Progress::Schemas { tables } => {
            eprintln!("copy-database: schemas match, {tables} tables to copy");
        }
        Progress::Rows { table, copied, total } => eprintln!("copy-database: {table}: {copied}/{total} rows"),
        Progress::Sequence { table, next_after } => {
            eprintln!("copy-database: {table}: sequence moved past {next_after}");
        }
        Progress::Checked { table, rows, sampled } => {
            eprintln!("copy-database: {table}: checked {rows} rows, {sampled} compared")
        }
    };
    match copy::run(&options, &mut report).await {
        Ok(s) => {
            println!(
                "copied {} rows of {} tables from {} to {}; row counts equal, {} sampled rows equal",
                s.rows,
                s.tables,
                control_plane::db::redact_url(&args.from),
                control_plane::db::redact_url(&args.to),
                s.sampled
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.exit_status(), &e),
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
