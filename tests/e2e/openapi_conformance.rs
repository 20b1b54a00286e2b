//! The served OpenAPI document tells the truth. schemathesis, a client that knows the API only from
//! `/openapi.json`, generates requests from it — valid ones and ones the document forbids — against
//! the real control plane, signed in as a tenant (the routes a tenant uses) and then as the operator
//! (every route), with all of its checks:
//! no server error, no status, header, content type or body outside the document, no request valid
//! by the document refused, none it forbids accepted, and the stateful checks across operations.
//!
//! schemathesis comes from PyPI, pinned in `tests/schemathesis-requirements.txt`; `tests/run.sh deps`
//! installs it into `tests/.venv`. `CCP_SCHEMATHESIS` may name another `st`. Without it the test is
//! skipped, unless `CCP_REQUIRE_SCHEMATHESIS=1` (set by `tests/run.sh test`), which makes that a failure.
//! `CCP_SCHEMATHESIS_EXAMPLES` (default 100) sets the examples per operation and
//! `CCP_SCHEMATHESIS_SEED` the seed (default a fixed one, so CI runs repeat; `random` for a new one).
//!
//! Every operation is run. Nothing here builds Docker hosts: the control plane runs without its
//! embedded agent, so host tasks stay queued and egress tests answer 503 `no_agent`. The settings
//! beside the command line, each exception with its reason, are in
//! `e2e/openapi_conformance/schemathesis.toml`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation must panic"
)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use cloud_cli_proxy_tests::{ControlPlane, Options, installation};
use serde_json::Value;

const REQUIRE_ENV: &str = "CCP_REQUIRE_SCHEMATHESIS";
const DEFAULT_EXAMPLES: u32 = 100;
const DEFAULT_SEED: &str = "20261206";

/// The `st` to run: `$CCP_SCHEMATHESIS`, the venv `tests/run.sh deps` makes, or one on `PATH`.
fn schemathesis() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CCP_SCHEMATHESIS") {
        return Some(PathBuf::from(path));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/st");
    if venv.is_file() {
        return Some(venv);
    }
    let on_path = Command::new("st").arg("--version").output();
    on_path
        .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).contains("st, version"))
        .then(|| PathBuf::from("st"))
}

/// What one run of schemathesis found.
struct Outcome {
    who: &'static str,
    /// Test cases generated.
    cases: u64,
    /// Test cases with at least one failed check.
    failed_cases: u64,
    /// `code title: count (operations)` of each kind of failure, and every error.
    problems: Vec<String>,
    /// What `st` printed, for the failure message.
    output: String,
}

/// What a tenant's run leaves out: the operator's routes and the machine links, which answer a
/// tenant's token only 403 and 401 (the authorization matrix covers those); the operator's run has
/// them all.
const NOT_FOR_TENANTS: &str = "^/v1/(admin|agent|gateway)/";

/// Runs `st` over the served document with `token`, writing its report into `dir`; `exclude` is a
/// regular expression of paths left out.
fn run(
    st: &Path,
    cp: &ControlPlane,
    who: &'static str,
    token: &str,
    exclude: Option<&str>,
    dir: &Path,
) -> Outcome {
    let base = cp.base_url();
    let examples =
        std::env::var("CCP_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| DEFAULT_EXAMPLES.to_string());
    let seed = match std::env::var("CCP_SCHEMATHESIS_SEED") {
        Ok(s) if s == "random" => None,
        Ok(s) => Some(s),
        Err(_) => Some(DEFAULT_SEED.to_owned()),
    };
    let report = dir.join(format!("{who}.json"));
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/openapi_conformance/schemathesis.toml");
    let mut cmd = Command::new(st);
    cmd.current_dir(dir)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{base}/openapi.json"), "--url", &base])
        .args(["--checks", "all", "--max-examples", &examples, "--workers", "2"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        // Only the loopback server is dialled: no redirect is followed, no proxy is used.
        .args(["--max-redirects", "0", "--request-timeout", "30"])
        .args(["--generation-database", "none", "--no-color"])
        .args(["--report", "json", "--report-dir"])
        .arg(dir)
        .arg("--report-json-path")
        .arg(&report)
        .env("NO_PROXY", "*")
        .env("no_proxy", "*");
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    if let Some(seed) = &seed {
        cmd.args(["--seed", seed]);
    }
    if let Some(exclude) = exclude {
        cmd.args(["--exclude-path-regex", exclude]);
    }
    let started = std::time::Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", st.display()));
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "{who}: no report at {} ({e}); st printed:\n{output}",
            report.display()
        )
    });
    let report: Value = serde_json::from_str(&text).expect("the JSON report of st run");
    let outcome = Outcome {
        who,
        cases: report["test_cases"]["generated"].as_u64().unwrap_or(0),
        failed_cases: report["test_cases"]["with_failures"].as_u64().unwrap_or(0),
        problems: problems(&report),
        output,
    };
    eprintln!(
        "schemathesis as {who}: {} cases, {} with failures ({} unique), {} kinds of problem, seed {}, {:.0} s",
        outcome.cases,
        outcome.failed_cases,
        report["test_cases"]["unique_failures"],
        outcome.problems.len(),
        report["seed"],
        started.elapsed().as_secs_f64()
    );
    assert!(
        report["complete"].as_bool() == Some(true),
        "{who}: st did not complete its run ({}); st printed:\n{}",
        report["stop_reason"],
        outcome.output
    );
    assert!(
        report["operations"]["tested"].as_u64().unwrap_or(0) > 20,
        "{who}: st tested too few operations: {}",
        report["operations"]
    );
    outcome
}

/// Every kind of failure and every error of a JSON report, one line each.
fn problems(report: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    for failure in report["failures"].as_array().into_iter().flatten() {
        let operations: Vec<&str> = failure["operations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        lines.push(format!(
            "{} {}: {} ({})",
            failure["code"].as_str().unwrap_or("?"),
            failure["title"].as_str().unwrap_or("?"),
            failure["count"],
            operations.join(", ")
        ));
    }
    for error in report["errors"].as_array().into_iter().flatten() {
        lines.push(format!("error: {error}"));
    }
    lines
}

#[tokio::test]
async fn the_served_document_tells_the_truth() {
    let Some(st) = schemathesis() else {
        assert!(
            std::env::var(REQUIRE_ENV).as_deref() != Ok("1"),
            "{REQUIRE_ENV}=1 but schemathesis is not installed: run `tests/run.sh deps`"
        );
        eprintln!(
            "skipping: schemathesis is not installed (`tests/run.sh deps`; {REQUIRE_ENV}=1 makes this a failure)"
        );
        return;
    };
    // Recordings shared with tenants, so the tenant's run reads their routes' answers too.
    let cp = ControlPlane::start(Options::new().env("RECORDINGS_TENANT_ACCESS", "true")).await;
    let admin = cp.admin().await;
    let dir = tempfile::Builder::new().prefix("ccp-openapi-").tempdir().unwrap();
    // Users, keys, every kind of egress IP, hosts with tasks, a binding and tokens: the responses
    // checked against the document carry real objects, not only empty pages.
    let populated = installation::populate(&cp, &admin, dir.path()).await;

    let doc = cp.api().get("/openapi.json").await;
    let refs = doc.text.matches("\"$ref\"").count();
    let local = doc.text.matches("\"$ref\":\"#/").count();
    assert_eq!(
        refs, local,
        "the document refers only to itself, never to another location"
    );

    // The tenant first: the operator's run may delete the tenant's objects.
    let outcomes = [
        run(
            &st,
            &cp,
            "tenant",
            &populated.alice_token,
            Some(NOT_FOR_TENANTS),
            dir.path(),
        ),
        run(&st, &cp, "operator", &populated.admin_token, None, dir.path()),
    ];

    let mut report = String::new();
    for o in &outcomes {
        if !o.problems.is_empty() {
            let _ = writeln!(
                report,
                "as {}: {} of {} cases failed:\n  {}\n--- st printed:\n{}",
                o.who,
                o.failed_cases,
                o.cases,
                o.problems.join("\n  "),
                o.output
            );
        }
    }
    // A 500 is a failure of its own check, but its cause is only in the server's log.
    let logs = cp.logs();
    let internal: Vec<&str> = logs.lines().filter(|l| l.contains("internal error")).collect();
    if !internal.is_empty() {
        let _ = writeln!(
            report,
            "the control plane logged internal errors:\n{}",
            internal.join("\n")
        );
    }
    assert!(report.is_empty(), "schemathesis found problems:\n{report}");
}
