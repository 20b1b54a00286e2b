//! Durability: data and tokens survive a restart on the same database, and a backup taken while the
//! control plane runs, restored into a fresh database (SQLite file or PostgreSQL database, as
//! `CCP_E2E_DATABASE` says) with its secrets key, answers the same as the original.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::Utc;
use cloud_cli_proxy_tests::database::PgDatabase;
use cloud_cli_proxy_tests::installation::{assert_same, observe, populate};
use cloud_cli_proxy_tests::{ControlPlane, Options};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_tokens_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let p = populate(&cp, &admin, dir.path()).await;
    let until = Utc::now();
    let before = observe(&admin, until).await;

    // Same database, same secret.
    cp.restart(cp.options().clone()).await;
    let api = cp.api();
    let admin = api.with_token(&p.admin_token);
    admin.get("/v1/admin/users").await.expect(200);
    assert_eq!(
        api.with_token(&p.alice_token).get("/v1/user/hosts").await.total(),
        1
    );
    assert_eq!(
        api.with_token(&p.alice_api_token)
            .get("/v1/auth/me")
            .await
            .expect(200)["username"],
        "alice"
    );
    api.login("alice", "alice-password").await;
    assert_same(&before, &observe(&admin, until).await, "after a restart");

    // Logs: JSON lines (LOG_FORMAT=json), and never a secret.
    let logs = cp.logs();
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "a log line that is not JSON: {line}"
        );
    }
    for secret in &p.secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret is in the logs: {secret}"
        );
    }
    assert!(logs.contains("control plane listening"));
}

fn script(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/scripts")
        .join(name);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// Runs a deploy script with a clean environment; returns the last line of its stdout.
fn run_script(name: &str, args: &[&Path], env: &[(&str, String)]) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg(script(name))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    // Never the machine's own service configuration.
    cmd.env(
        "CLOUD_CLI_PROXY_ENV_FILE",
        "/nonexistent/cloud-cli-proxy-test.env",
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("run {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} failed with {}:\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("{name} printed nothing"))
        .trim()
        .to_owned()
}

#[track_caller]
fn assert_restored_key(restored: &Path, original: &Path) {
    assert_eq!(
        std::fs::read(restored).unwrap(),
        std::fs::read(original).unwrap(),
        "restore.sh put the backed-up key in place"
    );
    let mode = std::fs::metadata(restored).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", restored.display());
}

/// Runs on the backend of `CCP_E2E_DATABASE`: SQLite (`.db.gz`) or PostgreSQL (`.dump`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_running_then_restore_answers_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(Options::new()).await;
    let admin = cp.admin().await;
    let p = populate(&cp, &admin, dir.path()).await;
    let until = Utc::now();

    // Backup while the control plane runs. With SQLite the key is found beside the database; with
    // PostgreSQL there is no such place, and the harness names the file.
    let key_file = cp.db_path().parent().unwrap().join("secrets.key");
    let backups = tempfile::tempdir().unwrap();
    let mut env = vec![
        ("BACKUP_DIR", backups.path().display().to_string()),
        ("DATABASE_URL", cp.database_url()),
        ("RETENTION_DAYS", "7".to_owned()),
    ];
    if cp.is_postgres() {
        env.push(("SECRETS_KEY_FILE", key_file.display().to_string()));
    }
    let backup = PathBuf::from(run_script("backup.sh", &[], &env));
    assert!(
        backup.is_file(),
        "backup.sh's last line is not a file: {}",
        backup.display()
    );
    assert!(
        backup.starts_with(backups.path()),
        "the backup is in BACKUP_DIR: {}",
        backup.display()
    );
    let name = backup.file_name().unwrap().to_str().unwrap();
    let stem = if cp.is_postgres() {
        name.strip_suffix(".dump")
    } else {
        name.strip_suffix(".db.gz")
    };
    let stem = stem.unwrap_or_else(|| panic!("{name} is not named for its kind of database"));
    let backup_key = backups.path().join(format!("{stem}.key"));
    assert_eq!(
        std::fs::read(&backup_key).unwrap(),
        std::fs::read(&key_file).unwrap(),
        "the secrets key is kept beside the backup"
    );
    let original = observe(&admin, until).await;
    // Written after the backup: must not be in the restored copy.
    admin.create_user("after-backup", "after-backup-pw").await;

    // Restore into a fresh database, with the key, and serve it with the same token secret.
    let restored_dir = tempfile::tempdir().unwrap();
    let restored_key = restored_dir.path().join("secrets.key");
    let restored = if cp.is_postgres() {
        let db = PgDatabase::create();
        let printed = run_script(
            "restore.sh",
            &[&backup],
            &[
                ("DATABASE_URL", db.url().to_owned()),
                ("SECRETS_KEY_FILE", restored_key.display().to_string()),
            ],
        );
        let printed = url::Url::parse(&printed).unwrap();
        assert_eq!(printed.path(), url::Url::parse(db.url()).unwrap().path());
        assert_eq!(printed.password(), None, "restore.sh printed a password");
        assert_restored_key(&restored_key, &key_file);
        let opts = cp
            .options()
            .clone()
            .postgres(db)
            .env("SECRETS_KEY_FILE", restored_key.display());
        ControlPlane::start(opts).await
    } else {
        let restored_db = restored_dir.path().join("restored.db");
        let url = format!("sqlite://{}", restored_db.display());
        run_script("restore.sh", &[&backup], &[("DATABASE_URL", url)]);
        assert!(
            restored_db.is_file(),
            "restore.sh created no {}",
            restored_db.display()
        );
        assert_restored_key(&restored_key, &key_file);
        ControlPlane::start(cp.options().clone().db(&restored_db)).await
    };
    let admin2 = restored.api().with_token(&p.admin_token);
    assert_same(
        &original,
        &observe(&admin2, until).await,
        "after backup and restore",
    );
    let names: Vec<Value> = admin2
        .get("/v1/admin/users")
        .await
        .data()
        .iter()
        .map(|u| u["username"].clone())
        .collect();
    assert!(
        !names.contains(&json!("after-backup")),
        "a user created after the backup was restored: {names:?}"
    );
    restored
        .api()
        .with_token(&p.alice_api_token)
        .get("/v1/auth/me")
        .await
        .expect(200);
    restored.api().login("alice", "alice-password").await;
    // The original is unharmed by the online backup.
    admin.get("/v1/admin/users").await.expect(200);
}
