//! The WireGuard tunnel process: boringtun's `Tunn` between the `ccp-tun` device and one UDP socket
//! (marked 0xcc, connected to the server). Two threads move packets (tun → encapsulate → UDP and
//! UDP → decapsulate → tun) with buffers allocated once; the main thread drives boringtun's timers
//! (handshake retries, rekeys, keepalives) and reports the first completed handshake on stdout.
//!
//! The process holds no state worth keeping: it is started (and re-started) by the supervisor, and
//! when it dies its tun device goes with it.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Duration;

use base64::Engine as _;
use boringtun::noise::{Tunn, TunnResult, errors::WireGuardError};
use boringtun::x25519;
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};
use wire::WireguardSpec;

use super::{Error, FWMARK, TUN_NAME, WG_KEEPALIVE_SECS, WG_MTU, parse_cidrs};
use crate::firewall::Ipv4Cidr;

/// Line the tunnel process prints on stdout once the first handshake completed.
pub const HANDSHAKE_LINE: &str = "handshake-complete";
/// How often boringtun's timers run (it wants 100-250 ms).
const TIMER_TICK: Duration = Duration::from_millis(100);
/// Room for one packet from the tun (its MTU is 1420; no offloads are enabled) plus WireGuard's
/// 32 bytes of overhead; boringtun wants at least 148 bytes for handshake messages.
const BUF: usize = 2048;
/// Datagram buffer size of the UDP socket (bursts while the tun side catches up).
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

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
    fn parse(field: &str, text: &str) -> Result<Self, Error> {
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

fn allowed(list: &[Ipv4Cidr], ip: Ipv4Addr) -> bool {
    list.iter().any(|c| c.contains(ip))
}

/// Destination of an IPv4 packet (`None` for anything else).
fn ipv4_dst(packet: &[u8]) -> Option<Ipv4Addr> {
    match Tunn::dst_address(packet) {
        Some(IpAddr::V4(ip)) => Some(ip),
        _ => None,
    }
}

fn lock(tunn: &Mutex<Tunn>) -> MutexGuard<'_, Tunn> {
    // A panicked packet thread ends the process anyway; the state itself stays usable.
    tunn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn send_udp(socket: &UdpSocket, packet: &[u8]) {
    if let Err(e) = socket.send(packet) {
        // ECONNREFUSED and friends come back from ICMP errors on a connected socket; the next
        // handshake retry or packet tries again.
        tracing::trace!(error = %e, "udp send");
    }
}

/// Runs the tunnel until a packet thread fails (the process then exits and is restarted).
pub fn run(settings: &Settings) -> Result<(), Error> {
    let tun = tun_rs::DeviceBuilder::new()
        .name(TUN_NAME)
        .ipv4(settings.address, settings.prefix, None)
        .mtu(WG_MTU)
        .build_sync()
        .map_err(Error::io(format!("create tun device {TUN_NAME}")))?;
    let tun = Arc::new(tun);

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
    let socket: Arc<UdpSocket> = Arc::new(socket.into());

    // The local session index only has to differ between restarts; boringtun keeps 24 bits of it.
    let nanos = std::time::UNIX_EPOCH
        .elapsed()
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let index = (std::process::id() ^ nanos) & 0x00ff_ffff;
    let tunn = Arc::new(Mutex::new(Tunn::new(
        x25519::StaticSecret::from(settings.private_key.0),
        x25519::PublicKey::from(settings.peer_public_key.0),
        settings.preshared_key.map(|k| k.0),
        Some(WG_KEEPALIVE_SECS),
        index,
        None,
    )));
    tracing::info!(endpoint = %settings.endpoint, device = TUN_NAME, "wireguard tunnel started");

    let (fail_tx, fail_rx) = mpsc::channel::<Error>();
    {
        let (tun, socket, tunn, fail) = (tun.clone(), socket.clone(), tunn.clone(), fail_tx.clone());
        let allowed_ips = settings.allowed_ips.clone();
        std::thread::Builder::new()
            .name("tun-to-udp".into())
            .spawn(move || {
                let e = outbound_loop(&tun, &socket, &tunn, &allowed_ips);
                let _ = fail.send(e);
            })
            .map_err(Error::io("spawn thread"))?;
    }
    {
        let (tun, socket, tunn, fail) = (tun.clone(), socket.clone(), tunn.clone(), fail_tx);
        let allowed_ips = settings.allowed_ips.clone();
        let peer = IpAddr::V4(*settings.endpoint.ip());
        std::thread::Builder::new()
            .name("udp-to-tun".into())
            .spawn(move || {
                let e = inbound_loop(&tun, &socket, &tunn, &allowed_ips, peer);
                let _ = fail.send(e);
            })
            .map_err(Error::io("spawn thread"))?;
    }

    let mut buf = vec![0u8; BUF];
    {
        let mut t = lock(&tunn);
        if let TunnResult::WriteToNetwork(p) = t.format_handshake_initiation(&mut buf, false) {
            send_udp(&socket, p);
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
        let mut t = lock(&tunn);
        match t.update_timers(&mut buf) {
            TunnResult::WriteToNetwork(p) => send_udp(&socket, p),
            TunnResult::Err(WireGuardError::ConnectionExpired) => {
                tracing::debug!("wireguard session expired; the next packet starts a handshake");
            }
            TunnResult::Err(e) => tracing::debug!(error = ?e, "wireguard timers"),
            _ => {}
        }
        let handshaken = t.stats().0.is_some();
        drop(t);
        if handshaken && !reported {
            reported = true;
            tracing::info!("wireguard handshake completed");
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{HANDSHAKE_LINE}");
            let _ = out.flush();
        }
    }
}

/// tun → encapsulate → UDP. Returns only on a device error.
fn outbound_loop(
    tun: &tun_rs::SyncDevice,
    socket: &UdpSocket,
    tunn: &Mutex<Tunn>,
    allowed_ips: &[Ipv4Cidr],
) -> Error {
    let mut src = vec![0u8; BUF];
    let mut dst = vec![0u8; BUF + 64];
    loop {
        let n = match tun.recv(&mut src) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Error::io(format!("read {TUN_NAME}"))(e),
        };
        let packet = &src[..n];
        if !ipv4_dst(packet).is_some_and(|d| allowed(allowed_ips, d)) {
            tracing::trace!(len = n, "dropped: not IPv4 or not in allowed_ips");
            continue;
        }
        // The result borrows `dst` only: the lock is released before the send.
        let result = lock(tunn).encapsulate(packet, &mut dst);
        match result {
            TunnResult::WriteToNetwork(p) => send_udp(socket, p),
            TunnResult::Err(e) => tracing::trace!(error = ?e, "encapsulate"),
            _ => {}
        }
    }
}

/// UDP → decapsulate → tun. Returns only on a socket or device error.
fn inbound_loop(
    tun: &tun_rs::SyncDevice,
    socket: &UdpSocket,
    tunn: &Mutex<Tunn>,
    allowed_ips: &[Ipv4Cidr],
    peer: IpAddr,
) -> Error {
    let mut datagram = vec![0u8; BUF];
    let mut out = vec![0u8; BUF];
    loop {
        let n = match socket.recv(&mut datagram) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                continue;
            }
            Err(e) => return Error::io("read udp socket")(e),
        };
        let mut input: &[u8] = &datagram[..n];
        let mut src = Some(peer);
        // boringtun asks to be called again with an empty datagram after it wrote to the network,
        // until it is done (it flushes packets queued during the handshake that way).
        loop {
            let result = lock(tunn).decapsulate(src, input, &mut out);
            match result {
                TunnResult::WriteToNetwork(p) => {
                    send_udp(socket, p);
                    input = &[];
                    src = None;
                }
                TunnResult::WriteToTunnelV4(p, from) => {
                    if allowed(allowed_ips, from) {
                        if let Err(e) = tun.send(p) {
                            return Error::io(format!("write {TUN_NAME}"))(e);
                        }
                    } else {
                        tracing::trace!(%from, "dropped: source not in allowed_ips");
                    }
                    break;
                }
                TunnResult::WriteToTunnelV6(..) | TunnResult::Done => break,
                TunnResult::Err(e) => {
                    tracing::trace!(error = ?e, "decapsulate");
                    break;
                }
            }
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

    #[test]
    fn destination_of_ipv4_packets_only() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[16..20].copy_from_slice(&[198, 18, 3, 4]);
        assert_eq!(ipv4_dst(&v4), Some(Ipv4Addr::new(198, 18, 3, 4)));
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        assert_eq!(ipv4_dst(&v6), None);
        assert_eq!(ipv4_dst(&[]), None);
    }
}
