//! The WireGuard tunnel process: boringtun's `Tunn` between the `ccp-tun` device and one UDP socket
//! (marked 0xcc, connected to the server). Two threads move packets, each in batches: tun →
//! encapsulate → UDP, and UDP → decapsulate → tun; the main thread drives boringtun's timers
//! (handshake retries, rekeys, keepalives) and reports the first completed handshake on stdout.
//!
//! Batches are what make it cheap, on both sides of the tunnel:
//! - the tun device has the virtio-net header and TCP/UDP segmentation offloads on (`IFF_VNET_HDR`,
//!   `TUNSETOFFLOAD`, through tun-rs): the kernel hands over one super-packet of up to 64 KiB per
//!   read, split here into MTU-sized packets, and decrypted packets of one flow are coalesced back
//!   into super-packets before they are written (GRO), one write for many packets;
//! - the UDP socket sends a batch of equal-sized datagrams in one `sendmsg` with `UDP_SEGMENT`
//!   (GSO), and receives up to 64 datagrams per `recvmmsg`. (`UDP_GRO` is not asked for: the
//!   veth of a Docker network has GRO off by default, so it would only cost 64 KiB buffers.)
//!
//! boringtun's `Tunn` wants `&mut` for both directions, so it sits behind a mutex; each thread takes
//! it once per batch (not once per packet), so the two directions do not ping-pong on it. Buffers are
//! allocated once per thread and reused. Either offload falls back to one packet per call when the
//! kernel refuses it.
//!
//! The offloads change nothing about what may leave: every packet still enters the kernel through
//! `ccp-tun` (MTU 1420, so every split packet fits one datagram of at most 1452 bytes) or through
//! the one marked, connected socket, and the firewall sees the same marks and addresses.
//!
//! The process holds no state worth keeping: it is started (and re-started) by the supervisor, and
//! when it dies its tun device goes with it.

use std::io::{IoSlice, IoSliceMut, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Duration;

use base64::Engine as _;
use boringtun::noise::{Tunn, TunnResult, errors::WireGuardError};
use boringtun::x25519;
use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, recvmmsg, sendmsg};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};
use tun_rs::{GROTable, VIRTIO_NET_HDR_LEN};
use wire::WireguardSpec;

use super::{Error, FWMARK, TUN_NAME, WG_KEEPALIVE_SECS, WG_MTU, parse_cidrs};
use crate::firewall::Ipv4Cidr;

/// Line the tunnel process prints on stdout once the first handshake completed.
pub const HANDSHAKE_LINE: &str = "handshake-complete";
/// How often boringtun's timers run (it wants 100-250 ms).
const TIMER_TICK: Duration = Duration::from_millis(100);
/// Room for one packet (the tun's MTU is 1420, and segments are split to it) plus WireGuard's 32
/// bytes of overhead and 15 of padding; boringtun wants at least 148 bytes for handshake messages.
const SLOT: usize = 2048;
/// Datagrams per `recvmmsg`.
const BATCH: usize = 64;
/// Packets one tun super-packet may split into: 46 at the full MSS; 128 covers segments down to
/// 512 bytes. A super-packet of smaller segments (a socket that set a tiny MSS) is dropped, and
/// its sender retransmits.
const SPLIT: usize = tun_rs::IDEAL_BATCH_SIZE;
/// The largest super-packet the tun hands over or takes.
const SUPER: usize = 65_535;
/// Most bytes one GSO send may carry (the UDP length field, less the UDP and IPv4 headers).
const GSO_MAX_BYTES: usize = 65_535 - 8 - 20;
/// Most segments one GSO send may carry (the kernel's `UDP_MAX_SEGMENTS`).
const GSO_MAX_SEGMENTS: usize = 64;
/// Where a decrypted packet starts in its tun buffer: room for the virtio-net header the GRO
/// coalescing writes in front of it.
const TUN_OFFSET: usize = VIRTIO_NET_HDR_LEN;
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

/// The UDP side: the connected socket and whether the kernel took `UDP_SEGMENT` so far.
struct Udp {
    socket: Arc<UdpSocket>,
    gso: bool,
}

impl Udp {
    /// Sends the datagrams laid end to end in `buf`, of lengths `lens`: each [`gso_run`] goes out
    /// as one GSO send.
    fn send_all(&mut self, buf: &[u8], lens: &[usize]) {
        let mut start = 0;
        let mut i = 0;
        while i < lens.len() {
            let count = if self.gso { gso_run(&lens[i..]) } else { 1 };
            let total: usize = lens[i..i + count].iter().sum();
            let run = &buf[start..start + total];
            if count == 1 {
                send_udp(&self.socket, run);
            } else if let Err(errno) = self.send_segmented(run, lens[i]) {
                if matches!(errno, Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT) {
                    // No GSO on this kernel or device: one datagram per send from now on.
                    tracing::info!(error = %errno, "udp gso refused; sending datagrams one by one");
                    self.gso = false;
                    let mut at = start;
                    for len in &lens[i..i + count] {
                        send_udp(&self.socket, &buf[at..at + len]);
                        at += len;
                    }
                } else {
                    tracing::trace!(error = %errno, "udp gso send");
                }
            }
            start += total;
            i += count;
        }
    }

    fn send_segmented(&self, run: &[u8], segment: usize) -> Result<usize, Errno> {
        let size = u16::try_from(segment).map_err(|_| Errno::EINVAL)?;
        sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(run)],
            &[ControlMessage::UdpGsoSegments(&size)],
            MsgFlags::empty(),
            None,
        )
    }
}

/// How many of the datagrams of lengths `lens` (at least one) one GSO send carries from the first
/// on: a run of equal lengths, of which only the last may be shorter, within the kernel's bounds.
fn gso_run(lens: &[usize]) -> usize {
    let Some(&segment) = lens.first() else {
        return 0;
    };
    let mut total = segment;
    let mut count = 1;
    while count < lens.len()
        && count < GSO_MAX_SEGMENTS
        && lens[count - 1] == segment
        && lens[count] <= segment
        && total + lens[count] <= GSO_MAX_BYTES
    {
        total += lens[count];
        count += 1;
    }
    count
}

/// Creates `ccp-tun` with offloads, or without them if the kernel refuses.
fn create_tun(settings: &Settings) -> Result<tun_rs::SyncDevice, Error> {
    let build = |offload: bool| {
        tun_rs::DeviceBuilder::new()
            .name(TUN_NAME)
            .ipv4(settings.address, settings.prefix, None)
            .mtu(WG_MTU)
            .offload(offload)
            .build_sync()
    };
    match build(true) {
        Ok(tun) => Ok(tun),
        Err(e) => {
            tracing::info!(error = %e, "tun offloads refused; one packet per read and write");
            build(false).map_err(Error::io(format!("create tun device {TUN_NAME}")))
        }
    }
}

/// Runs the tunnel until a packet thread fails (the process then exits and is restarted).
pub fn run(settings: &Settings) -> Result<(), Error> {
    let tun = Arc::new(create_tun(settings)?);

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
    tracing::info!(
        endpoint = %settings.endpoint,
        device = TUN_NAME,
        offload = tun.tcp_gso(),
        "wireguard tunnel started"
    );

    let (fail_tx, fail_rx) = mpsc::channel::<Error>();
    {
        let (tun, tunn, fail) = (tun.clone(), tunn.clone(), fail_tx.clone());
        let mut udp = Udp {
            socket: socket.clone(),
            gso: true,
        };
        let allowed_ips = settings.allowed_ips.clone();
        std::thread::Builder::new()
            .name("tun-to-udp".into())
            .spawn(move || {
                let e = outbound_loop(&tun, &mut udp, &tunn, &allowed_ips);
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

    let mut buf = vec![0u8; SLOT];
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

/// tun → encapsulate → UDP, a super-packet (split into up to [`SPLIT`] packets) at a time; the
/// datagrams are laid end to end in one buffer for the GSO send. Returns only on a device error.
fn outbound_loop(
    tun: &tun_rs::SyncDevice,
    udp: &mut Udp,
    tunn: &Mutex<Tunn>,
    allowed_ips: &[Ipv4Cidr],
) -> Error {
    let mut original = vec![0u8; VIRTIO_NET_HDR_LEN + SUPER];
    let mut packets = vec![vec![0u8; SLOT]; SPLIT];
    let mut sizes = vec![0usize; SPLIT];
    let mut out = vec![0u8; SPLIT * SLOT];
    let mut lens = Vec::with_capacity(SPLIT);
    loop {
        let n = match tun.recv_multiple(&mut original, &mut packets, &mut sizes, 0) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // Not from the device but from splitting what it handed over (too many segments, a
            // header tun-rs refuses): that one super-packet is dropped.
            Err(e) if e.raw_os_error().is_none() => {
                tracing::trace!(error = %e, "dropped: super-packet not split");
                continue;
            }
            Err(e) => return Error::io(format!("read {TUN_NAME}"))(e),
        };
        lens.clear();
        let mut used = 0;
        {
            let mut t = lock(tunn);
            for (packet, size) in packets.iter().zip(&sizes).take(n) {
                let packet = &packet[..*size];
                if !ipv4_dst(packet).is_some_and(|d| allowed(allowed_ips, d)) {
                    tracing::trace!(len = size, "dropped: not IPv4 or not in allowed_ips");
                    continue;
                }
                match t.encapsulate(packet, &mut out[used..used + SLOT]) {
                    TunnResult::WriteToNetwork(p) => {
                        let len = p.len();
                        lens.push(len);
                        used += len;
                    }
                    TunnResult::Err(e) => tracing::trace!(error = ?e, "encapsulate"),
                    _ => {}
                }
            }
        }
        // Sent with the lock released: the other direction and the timers go on meanwhile.
        udp.send_all(&out[..used], &lens);
    }
}

/// UDP → decapsulate → tun, a `recvmmsg` (up to [`BATCH`] datagrams) at a time; the decrypted
/// packets go to the tun in one batch, coalesced per flow. Returns only on a socket or device error.
fn inbound_loop(
    tun: &tun_rs::SyncDevice,
    socket: &UdpSocket,
    tunn: &Mutex<Tunn>,
    allowed_ips: &[Ipv4Cidr],
    peer: IpAddr,
) -> Error {
    // A WireGuard datagram from a server with our MTU is at most 1452 bytes; a longer one is
    // truncated, fails authentication and is dropped.
    let mut datagrams = vec![0u8; BATCH * SLOT];
    let mut headers = MultiHeaders::<()>::preallocate(BATCH, None);
    let mut lens = Vec::with_capacity(BATCH);
    // Room to coalesce a whole flow into one buffer (GRO needs the space in front and behind).
    let mut packets: Vec<Vec<u8>> = (0..BATCH)
        .map(|_| Vec::with_capacity(2 * TUN_OFFSET + SUPER))
        .collect();
    let mut gro = GROTable::new();
    loop {
        lens.clear();
        {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = datagrams
                .chunks_mut(SLOT)
                .map(|chunk| [IoSliceMut::new(chunk)])
                .collect();
            // Waits for the first datagram, then takes what else is queued.
            match recvmmsg(
                socket.as_raw_fd(),
                &mut headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(received) => lens.extend(received.map(|m| m.bytes)),
                Err(Errno::EINTR | Errno::ECONNREFUSED) => continue,
                Err(e) => return Error::io("read udp socket")(e.into()),
            }
        }
        let mut ready = 0;
        {
            let mut t = lock(tunn);
            for (datagram, len) in datagrams.chunks(SLOT).zip(&lens) {
                let datagram = &datagram[..*len];
                let out = &mut packets[ready];
                out.resize(TUN_OFFSET + SLOT, 0);
                if let Some(len) = decapsulate(&mut t, socket, datagram, out, allowed_ips, peer) {
                    out.truncate(TUN_OFFSET + len);
                    ready += 1;
                }
            }
        }
        if ready > 0
            && let Err(e) = tun.send_multiple(&mut gro, &mut packets[..ready], TUN_OFFSET)
        {
            // From the device (it is gone): the end. From coalescing, or a packet the kernel
            // refused (a malformed one from the server): that batch is dropped.
            if e.raw_os_error().is_none_or(|code| code == nix::libc::EINVAL) {
                tracing::trace!(error = %e, "dropped: tun write");
            } else {
                return Error::io(format!("write {TUN_NAME}"))(e);
            }
        }
    }
}

/// Decapsulates one datagram into `out[TUN_OFFSET..]`; the length of the packet for the tun, if it
/// is one (an IPv4 packet from an allowed source). Handshake answers and the packets boringtun
/// queued during a handshake are sent at once.
fn decapsulate(
    t: &mut Tunn,
    socket: &UdpSocket,
    datagram: &[u8],
    out: &mut [u8],
    allowed_ips: &[Ipv4Cidr],
    peer: IpAddr,
) -> Option<usize> {
    let dst = &mut out[TUN_OFFSET..];
    match t.decapsulate(Some(peer), datagram, dst) {
        TunnResult::WriteToNetwork(p) => {
            send_udp(socket, p);
            // boringtun asks to be called again with an empty datagram after it wrote to the
            // network, until it is done (it flushes packets queued during the handshake that way).
            while let TunnResult::WriteToNetwork(p) = t.decapsulate(None, &[], dst) {
                send_udp(socket, p);
            }
            None
        }
        TunnResult::WriteToTunnelV4(p, from) => {
            if allowed(allowed_ips, from) {
                Some(p.len())
            } else {
                tracing::trace!(%from, "dropped: source not in allowed_ips");
                None
            }
        }
        TunnResult::WriteToTunnelV6(..) | TunnResult::Done => None,
        TunnResult::Err(e) => {
            tracing::trace!(error = ?e, "decapsulate");
            None
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
    fn gso_runs_are_equal_sized_with_a_shorter_last_and_within_bounds() {
        assert_eq!(gso_run(&[]), 0);
        assert_eq!(gso_run(&[148]), 1);
        // A split super-packet: full segments, then the shorter tail ends the run.
        assert_eq!(gso_run(&[1452, 1452, 1452, 700, 1452]), 4);
        // A longer datagram cannot follow: the kernel cuts every segment to the first's size.
        assert_eq!(gso_run(&[700, 1452]), 1);
        assert_eq!(gso_run(&[148, 148, 1452]), 2);
        // At most 64 segments, and at most 65507 bytes.
        assert_eq!(gso_run(&[100; 100]), GSO_MAX_SEGMENTS);
        let run = gso_run(&[1452; 64]);
        assert_eq!(run, GSO_MAX_BYTES / 1452);
        assert!(run * 1452 <= GSO_MAX_BYTES && (run + 1) * 1452 > GSO_MAX_BYTES);
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
