//! Shared set-up of the in-process control-plane tests: the state over a fresh SQLite file.

use clap::Parser;
use control_plane::{AppState, Config};

/// A control-plane state on a new database in a temporary directory (kept alive by the caller), with
/// the configuration it was built from. No agent runs: these tests drive the queue themselves.
pub async fn state() -> (AppState, Config, tempfile::TempDir) {
    state_with(&[]).await
}

/// [`state`] with more command-line arguments.
pub async fn state_with(extra: &[&str]) -> (AppState, Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let args = [
        "cloud-cli-proxy-control-plane",
        "--database-url",
        &url,
        "--admin-password",
        "operator-password",
        "--jwt-secret",
        "Xk3v9Qp2LmZr7Tb4Nw8Hc6Jd1Fg5Ys0AeRt",
        "--embedded-agent",
        "false",
    ];
    let config = Config::parse_from(args.iter().chain(extra));
    let state = AppState::init(&config, 8080, 2222).await.expect("state");
    (state, config, dir)
}
