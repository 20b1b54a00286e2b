//! `cloud-cli-proxy-egress`: the tunnel runtime of one host namespace (see `agent::egress_runtime`).
//! `run` is the supervisor the egress container starts under tini; `wireguard` is the tunnel
//! process it starts for a WireGuard egress (boringtun in this process).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cloud-cli-proxy-egress",
    about = "Egress tunnel runtime of one host namespace"
)]
struct Cli {
    /// Log format: human or json (filter with RUST_LOG); handed on to the WireGuard process.
    #[arg(long, global = true, env = "LOG_FORMAT", default_value = "human", value_parser = ["human", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Supervise the tunnel described by DIR/egress.json and report in DIR/status.json.
    Run {
        /// Directory shared with the agent.
        #[arg(long, env = "CCP_EGRESS_DIR", default_value = "/run/ccp-egress")]
        dir: PathBuf,
        /// The sing-box binary for proxy egresses.
        #[arg(long = "sing-box", env = "CCP_SING_BOX", default_value = "sing-box")]
        sing_box: PathBuf,
    },
    /// Run a WireGuard tunnel (started by `run`; the file holds the keys and is never logged).
    Wireguard {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let result = match cli.command {
        Cmd::Run { dir, sing_box } => supervise(dir, sing_box, cli.log_format),
        Cmd::Wireguard { config } => agent::egress_runtime::wireguard::load(&config)
            .and_then(|settings| agent::egress_runtime::wireguard::run(&settings))
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloud-cli-proxy-egress: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn supervise(dir: PathBuf, sing_box: PathBuf, log_format: String) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let self_exe = std::env::current_exe().context("cannot find this binary to re-execute")?;
    let stop = Arc::new(AtomicBool::new(false));
    // SIGTERM (from tini on `docker stop`) and SIGINT stop the tunnel and leave the state idle.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("signal runtime")?;
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut term) = signal(SignalKind::terminate()) else {
                    return;
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                flag.store(true, Ordering::Relaxed);
            });
        })
        .context("signal thread")?;
    let opts = agent::egress_runtime::supervisor::Options {
        dir,
        sing_box,
        self_exe,
        log_format,
    };
    agent::egress_runtime::supervisor::run(opts, &stop).map_err(anyhow::Error::from)
}
