//! The batched WireGuard data path between a tun device and one UDP socket, for any set of peers:
//! the tunnel process's one server ([`super::run`]), or the peers of a [`super::responder`].
//!
//! One thread moves packets both ways, a batch at a time: it waits (`poll`) until the tun device or
//! the socket has something, then carries a batch of each that has, tun → encapsulate → UDP and
//! UDP → decapsulate → tun. One thread rather than one per direction: on two cores shared with the
//! other end, the applications and the kernel, a thread per direction spent its time waking the
//! other and being preempted; one thread finds the other direction's work ready when it comes back
//! to `poll`, and costs 15-25 % less CPU per GiB (docs/egress.md). Batches are what make it cheap,
//! on both sides of the tunnel:
//! - the tun device has the virtio-net header and TCP/UDP segmentation offloads on (`IFF_VNET_HDR`,
//!   `TUNSETOFFLOAD`, through tun-rs): the kernel hands over one super-packet of up to 64 KiB per
//!   read, split here into MTU-sized packets, and decrypted packets of one flow are coalesced back
//!   into super-packets before they are written (GRO), one write for many packets;
//! - the UDP socket sends a batch of equal-sized datagrams to one peer in one `sendmsg` with
//!   `UDP_SEGMENT` (GSO), and takes `UDP_GRO`: the peer's GSO sends then arrive as they left, one
//!   message of up to 64 KiB of datagrams, instead of being cut apart by the kernel on the way in;
//!   one `recvmmsg` takes up to 16 such messages (64 single datagrams without GRO).
//!
//! Each peer's boringtun `Tunn` wants `&mut`, so it sits behind a mutex shared with the timers;
//! the packet thread takes it once per run of consecutive packets of one peer in a batch (a
//! super-packet is one flow, so once per batch), not once per packet. Which peer a packet belongs
//! to is the [`Peers`]' decision: cryptokey routing by destination on the way out, the datagram's
//! receiver index or handshake key on the way in. Buffers are allocated once and reused. Either
//! offload falls back to one packet per call when the kernel refuses it.

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};

use boringtun::noise::{Tunn, TunnResult, errors::WireGuardError};
use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, sendmsg, setsockopt,
    sockopt,
};
use tun_rs::{GROTable, VIRTIO_NET_HDR_LEN};

use super::super::{Error, WG_MTU};
use crate::firewall::Ipv4Cidr;

/// Room for one packet (the tun's MTU is 1420, and segments are split to it) plus WireGuard's 32
/// bytes of overhead and 15 of padding; boringtun wants at least 148 bytes for handshake messages.
pub(super) const SLOT: usize = 2048;
/// Datagrams per `recvmmsg` without UDP_GRO, and decrypted packets per batch of tun writes.
const BATCH: usize = 64;
/// Messages per `recvmmsg` with UDP_GRO, each up to [`GRO_ROOM`] bytes of datagrams.
const GRO_MESSAGES: usize = 16;
/// Room for one UDP_GRO message: the kernel coalesces at most 64 KiB.
const GRO_ROOM: usize = 65_536;
/// Packets one tun super-packet may split into: 46 at the full MSS; 128 covers segments down to
/// 512 bytes. A super-packet of smaller segments (a socket that set a tiny MSS) is dropped, and
/// its sender retransmits.
const SPLIT: usize = tun_rs::IDEAL_BATCH_SIZE;
/// Packets one turn of reading the tun may bring (see [`TunToUdp::read`]).
const READ_ROOM: usize = GSO_MAX_SEGMENTS + SPLIT;
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
    /// Whether the kernel took `UDP_GRO`: a received message may then hold many datagrams.
    gro: bool,
}

impl Udp {
    pub(super) fn new(socket: UdpSocket, connected: bool) -> Self {
        // A peer's GSO sends arrive whole (as one message of equal-sized datagrams) instead of
        // being cut apart by the kernel on the way in, and one message carries up to 64 KiB.
        let gro = setsockopt(&socket, sockopt::UdpGroSegment, &true)
            .inspect_err(|e| tracing::info!(error = %e, "udp gro refused; one datagram per message"))
            .is_ok();
        Self {
            socket: Arc::new(socket),
            connected,
            gso: true,
            gro,
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

/// Starts the packet thread; the error it ends with is sent on `fail`.
pub(super) fn spawn(
    tun: &Arc<tun_rs::SyncDevice>,
    udp: &Udp,
    peers: &Arc<dyn Peers>,
    fail: &mpsc::Sender<Error>,
) -> Result<(), Error> {
    let (tun, mut udp, peers, fail) = (tun.clone(), udp.clone(), peers.clone(), fail.clone());
    // The packet thread reads the tun until it is empty (see [`TunToUdp::read`]).
    tun.set_nonblocking(true)
        .map_err(Error::io("make the tun device non-blocking"))?;
    std::thread::Builder::new()
        .name("wireguard".into())
        .spawn(move || {
            let e = packet_loop(&tun, &mut udp, peers.as_ref());
            let _ = fail.send(e);
        })
        .map_err(Error::io("spawn thread"))?;
    Ok(())
}

/// One thread for both directions: waits until the tun or the socket has something, and moves a
/// batch of whichever has. Returns only on a device or socket error.
fn packet_loop(tun: &tun_rs::SyncDevice, udp: &mut Udp, peers: &dyn Peers) -> Error {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut outbound = TunToUdp::new();
    let mut inbound = UdpToTun::new(udp.gro);
    loop {
        let (tun_ready, udp_ready) = {
            let mut fds = [
                PollFd::new(tun.as_fd(), PollFlags::POLLIN),
                PollFd::new(udp.socket.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Error::io("poll")(e.into()),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if udp_ready && let Err(e) = inbound.step(tun, udp, peers) {
            return e;
        }
        if tun_ready && let Err(e) = outbound.step(tun, udp, peers) {
            return e;
        }
    }
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

/// tun → encapsulate → UDP, what the tun holds at a time (one super-packet, or up to a GSO send's
/// worth of single packets); the datagrams of a run of packets for one peer are laid end to end in
/// one buffer for the GSO send.
///
/// The tun is read until it is empty, not once per `poll`: a download's ACKs come one small
/// packet per read, many for each batch the other direction writes, and one read per turn left
/// the rest waiting in the tun's queue behind whole batches of the other direction. Equal-sized as
/// they are, they also leave in GSO sends.
struct TunToUdp {
    original: Vec<u8>,
    packets: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    out: Vec<u8>,
    lens: Vec<usize>,
    targets: Vec<Option<Arc<Peer>>>,
}

impl TunToUdp {
    fn new() -> Self {
        Self {
            original: vec![0u8; VIRTIO_NET_HDR_LEN + SUPER],
            // Reads go on while fewer than GSO_MAX_SEGMENTS packets are in, so each has SPLIT
            // slots free.
            packets: vec![vec![0u8; SLOT]; READ_ROOM],
            sizes: vec![0usize; READ_ROOM],
            out: vec![0u8; READ_ROOM * SLOT],
            lens: Vec::with_capacity(READ_ROOM),
            targets: Vec::with_capacity(READ_ROOM),
        }
    }

    /// Reads the (non-blocking) tun until it is empty, a read brought a super-packet, or a GSO
    /// send's worth of single packets is in; the number of packets in `packets`.
    fn read(&mut self, tun: &tun_rs::SyncDevice) -> Result<usize, Error> {
        let mut n = 0;
        while n < GSO_MAX_SEGMENTS {
            match tun.recv_multiple(
                &mut self.original,
                &mut self.packets[n..],
                &mut self.sizes[n..],
                0,
            ) {
                Ok(k) => {
                    n += k;
                    // A super-packet is a batch already (more reads would only let the buffers
                    // outgrow the caches), and a read that brought nothing ends the turn.
                    if k != 1 {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Not from the device but from splitting what it handed over (too many segments,
                // a header tun-rs refuses): that one super-packet is dropped.
                Err(e) if e.raw_os_error().is_none() => {
                    tracing::trace!(error = %e, "dropped: super-packet not split");
                }
                Err(e) => return Err(Error::io("read the tun device")(e)),
            }
        }
        Ok(n)
    }

    /// What the tun holds read and sent; an error only if the device is gone.
    fn step(&mut self, tun: &tun_rs::SyncDevice, udp: &mut Udp, peers: &dyn Peers) -> Result<(), Error> {
        let n = self.read(tun)?;
        let Self {
            packets,
            sizes,
            out,
            lens,
            targets,
            ..
        } = self;
        targets.clear();
        targets.extend(
            packets
                .iter()
                .zip(sizes.iter())
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
                while same(targets, i, &peer) {
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
            // Sent with the lock released: the timers go on meanwhile.
            match endpoint {
                Some(to) => udp.send_all(&out[..used], lens, to),
                None => tracing::trace!("dropped: the peer was never heard from"),
            }
        }
        Ok(())
    }
}

/// UDP → decapsulate → tun, a `recvmmsg` at a time; the decrypted packets go to the tun in
/// batches of at most [`BATCH`], coalesced per flow.
struct UdpToTun {
    receiver: Receiver,
    targets: Vec<Option<Arc<Peer>>>,
    packets: Vec<Vec<u8>>,
    gro: GROTable,
}

impl UdpToTun {
    fn new(gro: bool) -> Self {
        Self {
            receiver: Receiver::new(gro),
            targets: Vec::with_capacity(BATCH),
            packets: (0..BATCH)
                .map(|_| Vec::with_capacity(2 * TUN_OFFSET + SUPER))
                .collect(),
            gro: GROTable::new(),
        }
    }

    /// One `recvmmsg` and what it brought written; an error only if the socket or device is gone.
    fn step(&mut self, tun: &tun_rs::SyncDevice, udp: &Udp, peers: &dyn Peers) -> Result<(), Error> {
        match self.receiver.receive(&udp.socket) {
            Ok(()) => {}
            Err(Errno::EINTR | Errno::ECONNREFUSED | Errno::EAGAIN) => return Ok(()),
            Err(e) => return Err(Error::io("read udp socket")(e.into())),
        }
        let Self {
            receiver,
            targets,
            packets,
            gro,
        } = self;
        let (buffer, received) = (&receiver.buffer, &receiver.received);
        targets.clear();
        targets.extend(
            received
                .iter()
                .map(|&(start, len, _)| peers.by_datagram(&buffer[start..start + len])),
        );
        let mut ready = 0;
        let mut i = 0;
        while i < received.len() {
            let Some(peer) = targets[i].clone() else {
                tracing::trace!("dropped: a datagram for no known peer");
                i += 1;
                continue;
            };
            {
                let mut state = peer.lock();
                while ready < packets.len() && same(targets, i, &peer) {
                    let (start, len, from) = received[i];
                    let datagram = &buffer[start..start + len];
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
            // A full batch is written before the rest of what was received, with the lock released.
            if ready == packets.len() {
                write_tun(tun, gro, &mut packets[..ready])?;
                ready = 0;
            }
        }
        if ready > 0 {
            write_tun(tun, gro, &mut packets[..ready])?;
        }
        Ok(())
    }
}

/// One `recvmmsg`'s buffers, and the datagrams the last one brought.
struct Receiver {
    /// The messages' buffers end to end, [`Receiver::room`] bytes each.
    buffer: Vec<u8>,
    room: usize,
    /// Each datagram received: where it is in `buffer`, its length, its source.
    received: Vec<(usize, usize, Option<SocketAddrV4>)>,
}

impl Receiver {
    /// With UDP_GRO a message is up to 64 KiB of equal-sized datagrams end to end; without it, one
    /// datagram. A WireGuard datagram from a peer with our MTU is at most 1452 bytes; a longer one
    /// is truncated, fails authentication and is dropped.
    fn new(gro: bool) -> Self {
        let (messages, room) = if gro {
            (GRO_MESSAGES, GRO_ROOM)
        } else {
            (BATCH, SLOT)
        };
        Self {
            buffer: vec![0u8; messages * room],
            room,
            received: Vec::with_capacity(BATCH),
        }
    }

    /// Takes what is queued, without waiting (EAGAIN if nothing is: a datagram `poll` announced
    /// may still be dropped, and the tun must not wait on the socket), and lists its datagrams.
    fn receive(&mut self, socket: &UdpSocket) -> Result<(), Errno> {
        self.received.clear();
        let room = self.room;
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
            .buffer
            .chunks_mut(room)
            .map(|chunk| [IoSliceMut::new(chunk)])
            .collect();
        // Made anew for each call: the kernel shrinks each header's control length to what it
        // wrote, and nix does not restore it, so a message without the GRO control message would
        // leave no room for it in the next one.
        let mut headers = MultiHeaders::<SockaddrIn>::preallocate(iovs.len(), Some(nix::cmsg_space!(i32)));
        let got = recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        for (k, message) in got.enumerate() {
            let segment = message.cmsgs().ok().into_iter().flatten().find_map(|c| match c {
                ControlMessageOwned::UdpGroSegments(size) => usize::try_from(size).ok(),
                _ => None,
            });
            let from = message.address.map(SocketAddrV4::from);
            self.received.extend(
                datagrams_of(message.bytes, segment).map(|(start, len)| (k * room + start, len, from)),
            );
        }
        Ok(())
    }
}

/// Writes decrypted packets to the tun, coalesced per flow; an error only if the device is gone.
fn write_tun(tun: &tun_rs::SyncDevice, gro: &mut GROTable, packets: &mut [Vec<u8>]) -> Result<(), Error> {
    match tun.send_multiple(gro, packets, TUN_OFFSET) {
        Ok(_) => Ok(()),
        // From coalescing, or a packet the kernel refused (a malformed one from the peer): that
        // batch is dropped.
        Err(e) if e.raw_os_error().is_none_or(|code| code == nix::libc::EINVAL) => {
            tracing::trace!(error = %e, "dropped: tun write");
            Ok(())
        }
        Err(e) => Err(Error::io("write the tun device")(e)),
    }
}

/// The datagrams in a received message of `bytes` bytes: one, or with UDP_GRO, `segment`-sized
/// ones end to end (the last may be shorter), as (offset, length).
fn datagrams_of(bytes: usize, segment: Option<usize>) -> impl Iterator<Item = (usize, usize)> {
    let step = segment.filter(|&s| s > 0 && s < bytes).unwrap_or(bytes.max(1));
    (0..bytes)
        .step_by(step)
        .map(move |start| (start, step.min(bytes - start)))
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
    fn a_gro_message_is_cut_into_its_datagrams() {
        let cut = |bytes, segment| datagrams_of(bytes, segment).collect::<Vec<_>>();
        assert_eq!(cut(1452, None), [(0, 1452)]);
        assert_eq!(cut(1452, Some(1452)), [(0, 1452)]);
        assert_eq!(
            cut(3 * 1452 + 92, Some(1452)),
            [(0, 1452), (1452, 1452), (2904, 1452), (4356, 92)]
        );
        assert_eq!(cut(2904, Some(1452)), [(0, 1452), (1452, 1452)]);
        // A segment size the message does not exceed, or none at all: the message is one datagram.
        assert_eq!(cut(148, Some(1452)), [(0, 148)]);
        assert_eq!(cut(148, Some(0)), [(0, 148)]);
        assert!(cut(0, None).is_empty());
    }

    /// A GSO send of several datagrams arrives, over loopback, as those datagrams, whether or not
    /// the receiving socket takes UDP_GRO; with it, as one message, also after a message that came
    /// without the GRO control message (a lone datagram).
    #[test]
    fn gso_sends_arrive_as_their_datagrams() {
        for receiver_gro in [true, false] {
            let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let gro = receiver_gro && setsockopt(&rx, sockopt::UdpGroSegment, &true).is_ok();
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let std::net::SocketAddr::V4(to) = rx.local_addr().unwrap() else {
                unreachable!()
            };
            let mut udp = Udp::new(tx, false);
            let mut receiver = Receiver::new(gro);
            let mut receive = |count: usize| {
                let mut got = Vec::new();
                let mut calls = 0;
                while got.len() < count {
                    // As the packet loop does; a datagram that never comes fails the test.
                    let mut fds = [nix::poll::PollFd::new(rx.as_fd(), nix::poll::PollFlags::POLLIN)];
                    let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16)).unwrap();
                    assert_eq!(ready, 1, "nothing arrived within 5 s");
                    receiver.receive(&rx).unwrap();
                    calls += 1;
                    got.extend(
                        receiver
                            .received
                            .iter()
                            .map(|&(start, len, _)| receiver.buffer[start..start + len].to_vec()),
                    );
                }
                (got, calls)
            };
            for round in 0..2 {
                udp.send(&[9; 100], to);
                assert_eq!(receive(1), (vec![vec![9; 100]], 1));
                let lens = [1000, 1000, 1000, 300];
                let mut buf = Vec::new();
                for (i, len) in lens.iter().enumerate() {
                    buf.extend(std::iter::repeat_n(u8::try_from(i).unwrap(), *len));
                }
                udp.send_all(&buf, &lens, to);
                let want: Vec<Vec<u8>> = lens
                    .iter()
                    .enumerate()
                    .map(|(i, len)| vec![u8::try_from(i).unwrap(); *len])
                    .collect();
                let (got, calls) = receive(lens.len());
                assert_eq!(got, want, "receiver with UDP_GRO: {gro}, round {round}");
                if gro {
                    assert_eq!(calls, 1, "one message with UDP_GRO, round {round}");
                }
            }
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
