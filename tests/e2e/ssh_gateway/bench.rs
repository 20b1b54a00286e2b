//! The gateway benchmark (`cloud-cli-proxy-bench ssh`) runs end to end on small sizes: both paths
//! work, every figure is printed, and what it created is gone afterwards. Its figures are not
//! judged here; timing belongs to the benchmark, run on release builds.

use std::time::Duration;

use cloud_cli_proxy_tests::docker::require_docker;

const LIMIT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssh_benchmark_runs_and_reports_every_figure() {
    require_docker();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloud-cli-proxy-bench"))
        .args(["ssh", "--mib", "8", "--logins", "2"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(LIMIT, run)
        .await
        .expect("the benchmark took too long")
        .expect("the benchmark did not start");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    for label in ["down (host → client)", "up (client → host)"] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no `{label}` line in:\n{stdout}"));
        // gateway MiB/s, direct MiB/s, then the ratio, all numbers.
        let numbers: Vec<f64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        assert!(
            numbers.len() >= 3 && numbers.iter().all(|n| *n > 0.0),
            "`{label}`: {line}"
        );
        assert!(line.contains("target ≥ 0.9"), "{line}");
    }
    let p50 = stdout
        .lines()
        .find(|l| l.contains("connect + auth + exec, p50 of 2"))
        .unwrap_or_else(|| panic!("no login line in:\n{stdout}"));
    assert!(
        p50.contains("gateway") && p50.contains("direct") && p50.contains("added"),
        "{p50}"
    );
    assert!(
        stderr.contains("round 3"),
        "every round is reported as it ends:\n{stderr}"
    );
}
