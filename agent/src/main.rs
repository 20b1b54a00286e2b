//! `cloud-cli-proxy-agent`: parses the configuration, installs tracing and runs [`agent::run`] until
//! SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "cloud-cli-proxy-agent",
    version,
    about = "The cloud-cli-proxy node agent"
)]
struct Cli {
    #[command(flatten)]
    config: agent::Config,
    /// Log format: human or json (filter with RUST_LOG).
    #[arg(long, env = "LOG_FORMAT", default_value = "human", value_parser = ["human", "json"])]
    log_format: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.config.validate() {
        eprintln!("cloud-cli-proxy-agent: {e}");
        return ExitCode::from(2);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    tracing::info!(config = ?cli.config, "starting");
    match agent::run(cli.config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloud-cli-proxy-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
