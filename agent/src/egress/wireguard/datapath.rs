//! The batched WireGuard data path between a tun device and one UDP socket, for any set of peers:
//! the tunnel process's one server ([`super::run`]), or the peers of a [`super::responder`].
//!
//! Two threads move packets, each in batches: tun → encapsulate → UDP, and UDP → decapsulate →
//! tun. Batches are what make it cheap, on both sides of the tunnel:
//! - the tun device has the virtio-net header and TCP/UDP segmentation offloads on (`IFF_VNET_HDR`,
//!   `TUNSETOFFLOAD`, through tun-rs): the kernel hands over one super-packet of up to 64 KiB per
//!   read, split here into MTU-sized packets, and decrypted packets of one flow are coalesced back
//!   into super-packets before they are written (GRO), one write for many packets;
//! - the UDP socket sends a batch of equal-sized datagrams to one peer in one `sendmsg` with
//!   `UDP_SEGMENT` (GSO), and receives up to 64 datagrams per `recvmmsg`. (`UDP_GRO` is not asked
//!   for: the veth of a Docker network has GRO off by default, so it would only cost 64 KiB
//!   buffers.)
//!
//! Each peer's boringtun `Tunn` wants `&mut` for both directions, so it sits behind a mutex; a
//! thread takes it once per run of consecutive packets of one peer in a batch (a super-packet is
//! one flow, so once per batch), not once per packet, so the two directions do not ping-pong on
//! it. Which peer a packet belongs to is the [`Peers`]' decision: cryptokey routing by destination
//! on the way out, the datagram's receiver index or handshake key on the way in. Buffers are
//! allocated once per thread and reused. Either offload falls back to one packet per call when the
//! kernel refuses it.

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};

use boringtun::noise::{Tunn, TunnResult, errors::WireGuardError};
use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, sendmsg};
use tun_rs::{GROTable, VIRTIO_NET_HDR_LEN};

use super::super::{Error, WG_MTU};
use crate::firewall::Ipv4Cidr;

/// Room for one packet (the tun's MTU is 1420, and segments are split to it) plus WireGuard's 32
/// bytes of overhead and 15 of padding; boringtun wants at least 148 bytes for handshake messages.
pub(super) const SLOT: usize = 2048;
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
pub(super) const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// First byte of a WireGuard cookie reply (message type 3).
const COOKIE_REPLY: u8 = 3;

/// One WireGuard peer: its boringtun state and where its datagrams go.
pub(super) struct Peer {
    state: Mutex<PeerState>,
    /// Whether the endpoint follows the peer: a responder answers wherever the peer's last
    /// authenticated datagram came from; the client's server stays where it was configured.
    roams: bool,
}

pub(super) struct PeerState {
    pub(super) tunn: Tunn,
    /// `None` until a roaming peer was first heard from.
    pub(super) endpoint: Option<SocketAddrV4>,
}

impl Peer {
    /// A peer at a fixed address (the client's server).
    pub(super) fn fixed(tunn: Tunn, endpoint: SocketAddrV4) -> Self {
        Self {
            state: Mutex::new(PeerState {
                tunn,
                endpoint: Some(endpoint),
            }),
            roams: false,
        }
    }

    /// A peer whose address is learned from what it sends (a responder's).
    pub(super) fn roaming(tunn: Tunn) -> Self {
        Self {
            state: Mutex::new(PeerState { tunn, endpoint: None }),
            roams: true,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, PeerState> {
        // A panicked packet thread ends the process anyway; the state itself stays usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Which peer a packet belongs to. Decisions only; the loops below do the I/O.
pub(super) trait Peers: Send + Sync + 'static {
    /// The peer a packet for `dst` goes to (its allowed IPs hold `dst`), if any.
    fn by_destination(&self, dst: Ipv4Addr) -> Option<Arc<Peer>>;
    /// The peer a datagram from the network is meant for, if any.
    fn by_datagram(&self, datagram: &[u8]) -> Option<Arc<Peer>>;
    /// Whether `peer` may send packets from `src` into the tun (the same routing, inbound).
    fn allows(&self, peer: &Arc<Peer>, src: Ipv4Addr) -> bool;
    /// Every peer, for the timers.
    fn all(&self) -> Vec<Arc<Peer>>;
}

pub(super) fn allowed(list: &[Ipv4Cidr], ip: Ipv4Addr) -> bool {
    list.iter().any(|c| c.contains(ip))
}

/// Destination of an IPv4 packet (`None` for anything else).
fn ipv4_dst(packet: &[u8]) -> Option<Ipv4Addr> {
    match Tunn::dst_address(packet) {
        Some(IpAddr::V4(ip)) => Some(ip),
        _ => None,
    }
}

/// The UDP side: the socket, whether it is connected to the one peer (then sends name no
/// address), and whether the kernel took `UDP_SEGMENT` so far.
#[derive(Clone)]
pub(super) struct Udp {
    pub(super) socket: Arc<UdpSocket>,
    connected: bool,
    gso: bool,
}

impl Udp {
    pub(super) fn new(socket: UdpSocket, connected: bool) -> Self {
        Self {
            socket: Arc::new(socket),
            connected,
            gso: true,
        }
    }

    /// Sends one datagram to `to` (on a connected socket: to its peer).
    pub(super) fn send(&self, packet: &[u8], to: SocketAddrV4) {
        let sent = if self.connected {
            self.socket.send(packet)
        } else {
            self.socket.send_to(packet, to)
        };
        if let Err(e) = sent {
            // ECONNREFUSED and friends come back from ICMP errors on a connected socket; the next
            // handshake retry or packet tries again.
            tracing::trace!(error = %e, "udp send");
        }
    }

    /// Sends the datagrams laid end to end in `buf`, of lengths `lens`, to `to`: each [`gso_run`]
    /// goes out as one GSO send.
    fn send_all(&mut self, buf: &[u8], lens: &[usize], to: SocketAddrV4) {
        let mut start = 0;
        let mut i = 0;
        while i < lens.len() {
            let count = if self.gso { gso_run(&lens[i..]) } else { 1 };
            let total: usize = lens[i..i + count].iter().sum();
            let run = &buf[start..start + total];
            if count == 1 {
                self.send(run, to);
            } else if let Err(errno) = self.send_segmented(run, lens[i], to) {
                if matches!(errno, Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT) {
                    // No GSO on this kernel or device: one datagram per send from now on.
                    tracing::info!(error = %errno, "udp gso refused; sending datagrams one by one");
                    self.gso = false;
                    let mut at = start;
                    for len in &lens[i..i + count] {
                        self.send(&buf[at..at + len], to);
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

    fn send_segmented(&self, run: &[u8], segment: usize, to: SocketAddrV4) -> Result<usize, Errno> {
        let size = u16::try_from(segment).map_err(|_| Errno::EINVAL)?;
        let fd = self.socket.as_raw_fd();
        let iov = [IoSlice::new(run)];
        let cmsg = [ControlMessage::UdpGsoSegments(&size)];
        if self.connected {
            sendmsg::<()>(fd, &iov, &cmsg, MsgFlags::empty(), None)
        } else {
            sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&SockaddrIn::from(to)))
        }
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

/// Creates tun device `name` at `address/prefix` with offloads, or without them if the kernel
/// refuses.
pub(super) fn create_tun(name: &str, address: Ipv4Addr, prefix: u8) -> Result<tun_rs::SyncDevice, Error> {
    let build = |offload: bool| {
        tun_rs::DeviceBuilder::new()
            .name(name)
            .ipv4(address, prefix, None)
            .mtu(WG_MTU)
            .offload(offload)
            .build_sync()
    };
    match build(true) {
        Ok(tun) => Ok(tun),
        Err(e) => {
            tracing::info!(error = %e, "tun offloads refused; one packet per read and write");
            build(false).map_err(Error::io(format!("create tun device {name}")))
        }
    }
}

/// Starts the two packet threads; the first error either ends with is sent on `fail`.
pub(super) fn spawn(
    tun: &Arc<tun_rs::SyncDevice>,
    udp: &Udp,
    peers: &Arc<dyn Peers>,
    fail: &mpsc::Sender<Error>,
) -> Result<(), Error> {
    {
        let (tun, mut udp, peers, fail) = (tun.clone(), udp.clone(), peers.clone(), fail.clone());
        std::thread::Builder::new()
            .name("tun-to-udp".into())
            .spawn(move || {
                let e = outbound_loop(&tun, &mut udp, peers.as_ref());
                let _ = fail.send(e);
            })
            .map_err(Error::io("spawn thread"))?;
    }
    {
        let (tun, udp, peers, fail) = (tun.clone(), udp.clone(), peers.clone(), fail.clone());
        std::thread::Builder::new()
            .name("udp-to-tun".into())
            .spawn(move || {
                let e = inbound_loop(&tun, &udp, peers.as_ref());
                let _ = fail.send(e);
            })
            .map_err(Error::io("spawn thread"))?;
    }
    Ok(())
}

/// Runs boringtun's timers of every peer once (handshake retries, rekeys, keepalives); `buf` is
/// scratch space of at least [`SLOT`] bytes.
pub(super) fn update_timers(peers: &dyn Peers, udp: &Udp, buf: &mut [u8]) {
    for peer in peers.all() {
        let mut state = peer.lock();
        let endpoint = state.endpoint;
        match state.tunn.update_timers(buf) {
            TunnResult::WriteToNetwork(p) => {
                if let Some(to) = endpoint {
                    udp.send(p, to);
                }
            }
            TunnResult::Err(WireGuardError::ConnectionExpired) => {
                tracing::debug!("wireguard session expired; the next packet starts a handshake");
            }
            TunnResult::Err(e) => tracing::debug!(error = ?e, "wireguard timers"),
            _ => {}
        }
    }
}

/// Whether the packets of `targets[i]` go to `peer`.
fn same(targets: &[Option<Arc<Peer>>], i: usize, peer: &Arc<Peer>) -> bool {
    targets
        .get(i)
        .and_then(Option::as_ref)
        .is_some_and(|p| Arc::ptr_eq(p, peer))
}

/// tun → encapsulate → UDP, a super-packet (split into up to [`SPLIT`] packets) at a time; the
/// datagrams of a run of packets for one peer are laid end to end in one buffer for the GSO send.
/// Returns only on a device error.
fn outbound_loop(tun: &tun_rs::SyncDevice, udp: &mut Udp, peers: &dyn Peers) -> Error {
    let mut original = vec![0u8; VIRTIO_NET_HDR_LEN + SUPER];
    let mut packets = vec![vec![0u8; SLOT]; SPLIT];
    let mut sizes = vec![0usize; SPLIT];
    let mut out = vec![0u8; SPLIT * SLOT];
    let mut lens = Vec::with_capacity(SPLIT);
    let mut targets: Vec<Option<Arc<Peer>>> = Vec::with_capacity(SPLIT);
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
            Err(e) => return Error::io("read the tun device")(e),
        };
        targets.clear();
        targets.extend(
            packets
                .iter()
                .zip(&sizes)
                .take(n)
                .map(|(packet, size)| ipv4_dst(&packet[..*size]).and_then(|d| peers.by_destination(d))),
        );
        let mut i = 0;
        while i < n {
            let Some(peer) = targets[i].clone() else {
                tracing::trace!(len = sizes[i], "dropped: not IPv4 or not in allowed_ips");
                i += 1;
                continue;
            };
            lens.clear();
            let mut used = 0;
            let endpoint = {
                let mut state = peer.lock();
                while same(&targets, i, &peer) {
                    let packet = &packets[i][..sizes[i]];
                    i += 1;
                    match state.tunn.encapsulate(packet, &mut out[used..used + SLOT]) {
                        TunnResult::WriteToNetwork(p) => {
                            let len = p.len();
                            lens.push(len);
                            used += len;
                        }
                        TunnResult::Err(e) => tracing::trace!(error = ?e, "encapsulate"),
                        _ => {}
                    }
                }
                state.endpoint
            };
            // Sent with the lock released: the other direction and the timers go on meanwhile.
            match endpoint {
                Some(to) => udp.send_all(&out[..used], &lens, to),
                None => tracing::trace!("dropped: the peer was never heard from"),
            }
        }
    }
}

/// UDP → decapsulate → tun, a `recvmmsg` (up to [`BATCH`] datagrams) at a time; the decrypted
/// packets go to the tun in one batch, coalesced per flow. Returns only on a socket or device error.
fn inbound_loop(tun: &tun_rs::SyncDevice, udp: &Udp, peers: &dyn Peers) -> Error {
    // A WireGuard datagram from a peer with our MTU is at most 1452 bytes; a longer one is
    // truncated, fails authentication and is dropped.
    let mut datagrams = vec![0u8; BATCH * SLOT];
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(BATCH, None);
    let mut received: Vec<(usize, Option<SocketAddrV4>)> = Vec::with_capacity(BATCH);
    let mut targets: Vec<Option<Arc<Peer>>> = Vec::with_capacity(BATCH);
    // Room to coalesce a whole flow into one buffer (GRO needs the space in front and behind).
    let mut packets: Vec<Vec<u8>> = (0..BATCH)
        .map(|_| Vec::with_capacity(2 * TUN_OFFSET + SUPER))
        .collect();
    let mut gro = GROTable::new();
    loop {
        received.clear();
        {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = datagrams
                .chunks_mut(SLOT)
                .map(|chunk| [IoSliceMut::new(chunk)])
                .collect();
            // Waits for the first datagram, then takes what else is queued.
            match recvmmsg(
                udp.socket.as_raw_fd(),
                &mut headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(got) => received.extend(got.map(|m| (m.bytes, m.address.map(SocketAddrV4::from)))),
                Err(Errno::EINTR | Errno::ECONNREFUSED) => continue,
                Err(e) => return Error::io("read udp socket")(e.into()),
            }
        }
        targets.clear();
        targets.extend(
            datagrams
                .chunks(SLOT)
                .zip(&received)
                .map(|(datagram, (len, _))| peers.by_datagram(&datagram[..*len])),
        );
        let mut ready = 0;
        let mut i = 0;
        while i < received.len() {
            let Some(peer) = targets[i].clone() else {
                tracing::trace!("dropped: a datagram for no known peer");
                i += 1;
                continue;
            };
            let mut state = peer.lock();
            while same(&targets, i, &peer) {
                let (len, from) = received[i];
                let datagram = &datagrams[i * SLOT..i * SLOT + len];
                i += 1;
                let out = &mut packets[ready];
                out.resize(TUN_OFFSET + SLOT, 0);
                let inbound = Inbound {
                    udp,
                    peers,
                    peer: &peer,
                    from,
                };
                if let Some(len) = inbound.decapsulate(&mut state, datagram, out) {
                    out.truncate(TUN_OFFSET + len);
                    ready += 1;
                }
            }
        }
        if ready > 0
            && let Err(e) = tun.send_multiple(&mut gro, &mut packets[..ready], TUN_OFFSET)
        {
            // From the device (it is gone): the end. From coalescing, or a packet the kernel
            // refused (a malformed one from the peer): that batch is dropped.
            if e.raw_os_error().is_none_or(|code| code == nix::libc::EINVAL) {
                tracing::trace!(error = %e, "dropped: tun write");
            } else {
                return Error::io("write the tun device")(e);
            }
        }
    }
}

/// One received datagram's context.
struct Inbound<'a> {
    udp: &'a Udp,
    peers: &'a dyn Peers,
    peer: &'a Arc<Peer>,
    /// Its source (always known on an IPv4 socket).
    from: Option<SocketAddrV4>,
}

impl Inbound<'_> {
    /// Decapsulates one datagram into `out[TUN_OFFSET..]`; the length of the packet for the tun,
    /// if it is one (an IPv4 packet from an allowed source). Handshake answers and the packets
    /// boringtun queued during a handshake are sent at once. A roaming peer's endpoint moves to
    /// where an authenticated datagram came from.
    fn decapsulate(&self, state: &mut PeerState, datagram: &[u8], out: &mut [u8]) -> Option<usize> {
        let dst = &mut out[TUN_OFFSET..];
        let result = state
            .tunn
            .decapsulate(self.from.map(|a| IpAddr::V4(*a.ip())), datagram, dst);
        let cookie = matches!(&result, TunnResult::WriteToNetwork(p) if p.first() == Some(&COOKIE_REPLY));
        if self.peer.roams
            && !cookie
            && !matches!(result, TunnResult::Err(_))
            && let Some(from) = self.from
        {
            state.endpoint = Some(from);
        }
        match result {
            TunnResult::WriteToNetwork(p) => {
                // A cookie reply (the peer is under handshake load) answers the datagram's source,
                // which is not authenticated yet.
                let to = if cookie { self.from } else { state.endpoint }?;
                self.udp.send(p, to);
                // boringtun asks to be called again with an empty datagram after it wrote to the
                // network, until it is done (it flushes packets queued during the handshake that
                // way).
                while let TunnResult::WriteToNetwork(p) = state.tunn.decapsulate(None, &[], dst) {
                    self.udp.send(p, to);
                }
                None
            }
            TunnResult::WriteToTunnelV4(p, from) => {
                if self.peers.allows(self.peer, from) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
