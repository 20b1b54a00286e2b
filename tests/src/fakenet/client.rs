//! Clients on the node (the root namespace): a sing-box client made from an egress body, and a
//! one-shot DNS question to the probe's whoami name.

use std::fs::File;
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::internet::{PROBE_DNS_NAME, sing_box};
use super::netns::{run, wait_for};

const READY: Duration = Duration::from_secs(10);

/// A sing-box client on the node: a local `mixed` proxy on 127.0.0.1 whose traffic goes through
/// one egress IP's tunnel, made from that egress IP's body. Dropping it stops the process.
pub struct Client {
    child: Child,
    port: u16,
    dns_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Client {
    /// Starts a client for `body` (`wg_private_key`: the client's key for a wireguard body).
    pub fn start(body: &Value, wg_private_key: Option<&str>) -> Result<Self> {
        let dir = super::netns::owned_tempdir("ccpf-client-")?;
        let port = crate::access::free_port();
        let dns_port = free_udp_port()?;
        let config = super::servers::client_config(body, wg_private_key, port, Some(dns_port));
        let path = dir.path().join("client.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        let path_text = path.to_string_lossy().into_owned();
        run(&sing_box(), &["check", "-c", &path_text]).context("sing-box rejects the client config")?;
        let log = dir.path().join("client.log");
        let out = File::create(&log)?;
        let child = Command::new(sing_box())
            .args(["run", "-c", &path_text])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("cannot start the sing-box client")?;
        let client = Self {
            child,
            port,
            dns_port,
            log,
            _dir: dir,
        };
        let addr = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let up = || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
        if !wait_for(READY, up) {
            bail!("the sing-box client did not start: {}", client.log());
        }
        Ok(client)
    }

    /// `socks5h://127.0.0.1:<port>`, for `curl --proxy`.
    pub fn proxy_url(&self) -> String {
        format!("socks5h://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`: UDP sent there reaches the egress IP's resolver through the tunnel.
    pub fn dns_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, self.dns_port))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn free_udp_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Asks `resolver` (UDP) for the probe's whoami name: the answer is the address the probe saw
/// the query come from.
pub fn whoami(resolver: std::net::SocketAddr) -> Result<Ipv4Addr> {
    use probe::dns;
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let id: u16 = rand::random();
    socket.send_to(&dns::query(id, PROBE_DNS_NAME, 1), resolver)?;
    let mut buf = [0u8; 1500];
    loop {
        let (len, _) = socket
            .recv_from(&mut buf)
            .with_context(|| format!("no DNS answer from {resolver}"))?;
        if let Some(addr) = buf.get(..len).and_then(|r| dns::first_a(r, id)) {
            return Ok(addr);
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
