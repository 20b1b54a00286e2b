//! The WireGuard tunnel process: boringtun's `Tunn` between the `ccp-tun` device and one UDP socket
//! (marked 0xcc, connected to the server), moved in batches by the shared [`datapath`] (tun
//! offloads, UDP GSO and `recvmmsg`, GRO-coalesced tun writes, the lock taken once per batch); the
//! main thread drives boringtun's timers (handshake retries, rekeys, keepalives) and reports the
//! first completed handshake on stdout.
//!
//! The offloads change nothing about what may leave: every packet still enters the kernel through
//! `ccp-tun` (MTU 1420, so every split packet fits one datagram of at most 1452 bytes) or through
//! the one marked, connected socket, and the firewall sees the same marks and addresses.
//!
//! The process holds no state worth keeping: it is started (and re-started) by the supervisor, and
//! when it dies its tun device goes with it.
//!
//! The same data path also serves the other end of a tunnel, [`responder`]: many peers on one
//! unconnected socket. The agent never runs it; the tests' fake internet does, as a WireGuard
//! server fast enough not to be what a benchmark of this client measures.

mod datapath;
pub mod responder;

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use base64::Engine as _;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};
use wire::WireguardSpec;

use self::datapath::{Peer, Peers, SLOT, SOCKET_BUFFER, Udp, allowed};
use super::{Error, FWMARK, TUN_NAME, WG_KEEPALIVE_SECS, parse_cidrs};
use crate::firewall::Ipv4Cidr;

/// Line the tunnel process prints on stdout once the first handshake completed.
pub const HANDSHAKE_LINE: &str = "handshake-complete";
/// How often boringtun's timers run (it wants 100-250 ms).
const TIMER_TICK: Duration = Duration::from_millis(100);

/// The file the supervisor hands the tunnel process (0600, in the runtime directory).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildConfig {
    pub wireguard: WireguardSpec,
    pub endpoint_ip: Ipv4Addr,
}

impl std::fmt::Debug for ChildConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildConfig")
            .field("endpoint", &self.wireguard.endpoint)
            .field("endpoint_ip", &self.endpoint_ip)
            .finish_non_exhaustive()
    }
}

/// A 32-byte key, never shown.
#[derive(Clone, Copy)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// The key in `text` (base64, as `wg` prints it); `field` names it in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, Error> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| Error::Invalid(format!("{field} is not base64")))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::Invalid(format!("{field} is not 32 bytes")))?;
        Ok(Self(key))
    }
}

/// Everything the tunnel process needs, parsed and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub private_key: Key,
    pub peer_public_key: Key,
    pub preshared_key: Option<Key>,
    pub endpoint: SocketAddrV4,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub allowed_ips: Vec<Ipv4Cidr>,
}

impl Settings {
    /// Checks the spec; the endpoint's host is replaced by `endpoint_ip`, its port kept.
    pub fn from_spec(spec: &WireguardSpec, endpoint_ip: Ipv4Addr) -> Result<Self, Error> {
        let (_, port) = super::endpoint_of(&spec.endpoint)?;
        let (addr, prefix) = match spec.address.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().ok()),
            None => (spec.address.as_str(), Some(32)),
        };
        let address = addr.parse::<Ipv4Addr>().ok();
        let (Some(address), Some(prefix)) = (address, prefix.filter(|p| *p <= 32)) else {
            return Err(Error::Invalid(format!(
                "address `{}` is not IPv4/len",
                spec.address
            )));
        };
        Ok(Self {
            private_key: Key::parse("private_key", &spec.private_key)?,
            peer_public_key: Key::parse("peer_public_key", &spec.peer_public_key)?,
            preshared_key: spec
                .preshared_key
                .as_deref()
                .filter(|k| !k.is_empty())
                .map(|k| Key::parse("preshared_key", k))
                .transpose()?,
            endpoint: SocketAddrV4::new(endpoint_ip, port),
            address,
            prefix,
            allowed_ips: parse_cidrs(&spec.allowed_ips)?,
        })
    }
}

/// The client's one peer: the server, at its fixed endpoint, for the destinations of
/// `allowed_ips`.
struct OneServer {
    peer: Arc<Peer>,
    allowed_ips: Vec<Ipv4Cidr>,
}

impl Peers for OneServer {
    fn by_destination(&self, dst: Ipv4Addr) -> Option<Arc<Peer>> {
        allowed(&self.allowed_ips, dst).then(|| self.peer.clone())
    }

    fn by_datagram(&self, _datagram: &[u8]) -> Option<Arc<Peer>> {
        // The socket is connected: whatever arrives comes from the server.
        Some(self.peer.clone())
    }

    fn allows(&self, _peer: &Arc<Peer>, src: Ipv4Addr) -> bool {
        allowed(&self.allowed_ips, src)
    }

    fn all(&self) -> Vec<Arc<Peer>> {
        vec![self.peer.clone()]
    }
}

/// Runs the tunnel until a packet thread fails (the process then exits and is restarted).
pub fn run(settings: &Settings) -> Result<(), Error> {
    let tun = Arc::new(datapath::create_tun(TUN_NAME, settings.address, settings.prefix)?);

    let socket =
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(Error::io("udp socket"))?;
    socket
        .set_mark(FWMARK)
        .map_err(Error::io("SO_MARK on the udp socket"))?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket
        .bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())
        .map_err(Error::io("bind udp socket"))?;
    socket
        .connect(&SocketAddr::V4(settings.endpoint).into())
        .map_err(Error::io(format!("connect udp socket to {}", settings.endpoint)))?;
    let udp = Udp::new(socket.into(), true);

    // The local session index only has to differ between restarts; boringtun keeps 24 bits of it.
    let nanos = std::time::UNIX_EPOCH
        .elapsed()
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let index = (std::process::id() ^ nanos) & 0x00ff_ffff;
    let tunn = Tunn::new(
        x25519::StaticSecret::from(settings.private_key.0),
        x25519::PublicKey::from(settings.peer_public_key.0),
        settings.preshared_key.map(|k| k.0),
        Some(WG_KEEPALIVE_SECS),
        index,
        None,
    );
    let peer = Arc::new(Peer::fixed(tunn, settings.endpoint));
    let peers: Arc<dyn Peers> = Arc::new(OneServer {
        peer: peer.clone(),
        allowed_ips: settings.allowed_ips.clone(),
    });
    tracing::info!(
        endpoint = %settings.endpoint,
        device = TUN_NAME,
        offload = tun.tcp_gso(),
        "wireguard tunnel started"
    );

    let (fail_tx, fail_rx) = mpsc::channel::<Error>();
    datapath::spawn(&tun, &udp, &peers, &fail_tx)?;
    drop(fail_tx);

    let mut buf = vec![0u8; SLOT];
    {
        let mut state = peer.lock();
        if let TunnResult::WriteToNetwork(p) = state.tunn.format_handshake_initiation(&mut buf, false) {
            udp.send(p, settings.endpoint);
        }
    }
    let mut reported = false;
    // Without the supervisor nobody reports or restarts this tunnel, and a new supervisor could not
    // create ccp-tun while this process holds it: end together with the parent.
    let parent = std::os::unix::process::parent_id();
    loop {
        if std::os::unix::process::parent_id() != parent {
            return Err(Error::Invalid("the supervisor is gone".into()));
        }
        match fail_rx.recv_timeout(TIMER_TICK) {
            Ok(e) => return Err(e),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::Invalid("packet threads ended".into()));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        datapath::update_timers(peers.as_ref(), &udp, &mut buf);
        let handshaken = peer.lock().tunn.stats().0.is_some();
        if handshaken && !reported {
            reported = true;
            tracing::info!("wireguard handshake completed");
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{HANDSHAKE_LINE}");
            let _ = out.flush();
        }
    }
}

/// Reads the tunnel process's config file.
pub fn load(path: &std::path::Path) -> Result<Settings, Error> {
    let bytes = std::fs::read(path).map_err(Error::io(format!("read {}", path.display())))?;
    let cfg: ChildConfig =
        serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    Settings::from_spec(&cfg.wireguard, cfg.endpoint_ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WireguardSpec {
        WireguardSpec {
            endpoint: "[2001:db8::1]:51820".into(),
            peer_public_key: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=".into(),
            preshared_key: None,
            private_key: "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=".into(),
            allowed_ips: vec!["198.18.0.0/15".into()],
            address: "10.64.0.2/32".into(),
        }
    }

    #[test]
    fn settings_take_port_from_spec_and_address_from_agent() {
        let s = Settings::from_spec(&spec(), Ipv4Addr::new(198, 18, 1, 1)).unwrap();
        assert_eq!(s.endpoint, "198.18.1.1:51820".parse().unwrap());
        assert_eq!((s.address, s.prefix), (Ipv4Addr::new(10, 64, 0, 2), 32));
        assert!(allowed(&s.allowed_ips, Ipv4Addr::new(198, 19, 255, 1)));
        assert!(!allowed(&s.allowed_ips, Ipv4Addr::new(198, 20, 0, 1)));
        assert!(!format!("{s:?}").contains("yAnz5TF"));
    }

    #[test]
    fn bad_keys_ports_and_addresses_are_refused() {
        let ip = Ipv4Addr::new(198, 18, 1, 1);
        for bad in [
            WireguardSpec {
                private_key: "short".into(),
                ..spec()
            },
            WireguardSpec {
                peer_public_key: "AAAA".into(),
                ..spec()
            },
            WireguardSpec {
                endpoint: "host".into(),
                ..spec()
            },
            WireguardSpec {
                endpoint: "host:0".into(),
                ..spec()
            },
            WireguardSpec {
                address: "10.0.0.2/40".into(),
                ..spec()
            },
            WireguardSpec {
                address: "fd00::2/128".into(),
                ..spec()
            },
        ] {
            assert!(Settings::from_spec(&bad, ip).is_err(), "{}", bad.endpoint);
        }
    }
}
