//! `cloud-cli-proxy-probe`: parses the configuration, binds the HTTP and DNS (UDP and TCP) sockets and runs
//! [`probe::run`] until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let config = probe::Config::parse();
    if !probe::valid_name(&config.dns_name) {
        eprintln!(
            "cloud-cli-proxy-probe: PROBE_DNS_NAME `{}` is not a DNS name",
            config.dns_name
        );
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let http = match tokio::net::TcpListener::bind(config.http_listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "cloud-cli-proxy-probe: cannot listen on {}: {e}",
                config.http_listen
            );
            return ExitCode::FAILURE;
        }
    };
    let dns = match tokio::net::UdpSocket::bind(config.dns_listen).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "cloud-cli-proxy-probe: cannot listen on {}/udp: {e}",
                config.dns_listen
            );
            return ExitCode::FAILURE;
        }
    };
    let dns_tcp = match tokio::net::TcpListener::bind(config.dns_listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "cloud-cli-proxy-probe: cannot listen on {}/tcp: {e}",
                config.dns_listen
            );
            return ExitCode::FAILURE;
        }
    };
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cloud-cli-proxy-probe: cannot watch SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    match probe::run(&config, http, dns, dns_tcp, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloud-cli-proxy-probe: {e}");
            ExitCode::FAILURE
        }
    }
}
