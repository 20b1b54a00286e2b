//! The database the control planes under test use: a temporary SQLite file (the default), or, with
//! `CCP_E2E_DATABASE=postgres`, a fresh PostgreSQL database per control plane on the server named by
//! `CCP_TEST_POSTGRES` (a URL of a role that may create databases; `tests/run.sh` starts Debian's
//! cluster and makes one). Tests that look into the database do it through [`execute`] and
//! [`fetch_texts`], which speak to either.

use std::process::Command;
use std::sync::Arc;

/// Which backend the control planes of this test process use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The backend chosen by `CCP_E2E_DATABASE` (`sqlite`, the default, or `postgres`).
pub fn backend() -> Backend {
    match std::env::var("CCP_E2E_DATABASE").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("sqlite" | "") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("CCP_E2E_DATABASE must be `sqlite` or `postgres`, not `{other}`"),
    }
}

/// The server the PostgreSQL databases are made on.
pub fn server_url() -> String {
    std::env::var("CCP_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "CCP_TEST_POSTGRES is not set: run the tests through tests/run.sh, or set it to the URL \
             of a PostgreSQL role that may create databases"
        )
    })
}

/// One PostgreSQL database, dropped (connections and all) with the last handle.
#[derive(Debug)]
pub struct PgDatabase {
    name: String,
    url: String,
}

impl PgDatabase {
    /// A new empty database on [`server_url`].
    pub fn create() -> Arc<Self> {
        let server = server_url();
        let name = format!("ccp_e2e_{}", crate::fixtures::random_alnum(12).to_lowercase());
        psql(&server, &format!("CREATE DATABASE {name}"));
        let mut url = url::Url::parse(&server).expect("CCP_TEST_POSTGRES is a URL");
        url.set_path(&name);
        Arc::new(Self {
            name,
            url: url.to_string(),
        })
    }

    /// `postgres://…` of this database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Ok(server) = std::env::var("CCP_TEST_POSTGRES") {
            let _ = Command::new("psql")
                .args(["-qAt", "-v", "ON_ERROR_STOP=1", &server, "-c"])
                .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
                .output();
        }
    }
}

/// Runs one statement with `psql`, asserting success; its output, trimmed.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-qAt", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .output()
        .expect("run psql (Debian package postgresql-client)");
    assert!(
        out.status.success(),
        "psql `{sql}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

/// Runs `sql` (placeholders `$1`, `$2`, … bound to `args` as text) on the database at `url`;
/// answers the rows it changed.
pub async fn execute(url: &str, sql: &str, args: &[&str]) -> u64 {
    let pool = pool(url).await;
    let mut q = sqlx::query(sql);
    for a in args {
        q = q.bind(*a);
    }
    let done = q.execute(&pool).await.unwrap_or_else(|e| panic!("`{sql}`: {e}"));
    pool.close().await;
    done.rows_affected()
}

/// The rows of `sql` (text columns, `NULL` as `None`), placeholders as in [`execute`].
pub async fn fetch_texts(url: &str, sql: &str, args: &[&str]) -> Vec<Vec<Option<String>>> {
    use sqlx::Row as _;
    let pool = pool(url).await;
    let mut q = sqlx::query(sql);
    for a in args {
        q = q.bind(*a);
    }
    let rows = q
        .fetch_all(&pool)
        .await
        .unwrap_or_else(|e| panic!("`{sql}`: {e}"));
    pool.close().await;
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.try_get::<Option<String>, _>(i).expect("a text column"))
                .collect()
        })
        .collect()
}
