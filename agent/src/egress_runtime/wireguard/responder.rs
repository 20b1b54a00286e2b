//! The other end of a WireGuard tunnel, on the client's batched [`datapath`](super::datapath): one
//! tun device, one UDP socket bound to a port (neither connected nor marked), and a set of peers
//! (public key → allowed IPs) that may grow while it runs, with `wg addconf`'s rules: a new key is
//! a new peer, a known key gets the CIDR added, and a CIDR another peer held moves to it.
//!
//! It never initiates: a peer's endpoint is wherever its last authenticated datagram came from
//! (so a client that roams, or restarts on a new port, is followed), and packets for a peer that
//! was never heard from are dropped. A datagram finds its peer by the receiver index every
//! message but the first carries (boringtun's 24-bit peer index, which this side hands out), or,
//! for a handshake initiation, by the initiator's static key, decrypted with this side's.
//!
//! The agent never runs it: the tests' fake internet does (`cloud-cli-proxy-fake-wg`), so that a
//! benchmark of the tunnel process is not bounded by the server at the other end.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, PoisonError, RwLock, mpsc};

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn};
use boringtun::x25519;
use socket2::{Domain, Protocol, Socket, Type};

use super::datapath::{self, Peer, Peers, SLOT, SOCKET_BUFFER, Udp};
use super::{Error, Key, TIMER_TICK};
use crate::firewall::Ipv4Cidr;

/// What a responder listens on and what it is.
#[derive(Debug, Clone)]
pub struct ResponderConfig {
    pub private_key: Key,
    /// The UDP address it receives on.
    pub listen: SocketAddrV4,
    /// Its tun device's name, address and prefix length.
    pub tun_name: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
}

/// A running responder: its packet threads are going; [`Responder::run`] drives the timers.
pub struct Responder {
    udp: Udp,
    table: Arc<Table>,
    fail: mpsc::Receiver<Error>,
    tun: Arc<tun_rs::SyncDevice>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder").finish_non_exhaustive()
    }
}

/// The handle that adds peers to a running [`Responder`].
#[derive(Clone)]
pub struct PeerSet(Arc<Table>);

impl std::fmt::Debug for PeerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSet").finish_non_exhaustive()
    }
}

impl Responder {
    /// Creates the tun device, binds the socket and starts the packet threads, with no peers yet.
    pub fn start(config: &ResponderConfig) -> Result<Self, Error> {
        let tun = Arc::new(datapath::create_tun(
            &config.tun_name,
            config.address,
            config.prefix,
        )?);
        let socket =
            Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(Error::io("udp socket"))?;
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        socket
            .bind(&SocketAddr::V4(config.listen).into())
            .map_err(Error::io(format!("bind udp socket to {}", config.listen)))?;
        let udp = Udp::new(socket.into(), false);
        let secret = x25519::StaticSecret::from(config.private_key.0);
        let table = Arc::new(Table {
            public: x25519::PublicKey::from(&secret),
            secret,
            entries: RwLock::new(Entries {
                list: Vec::new(),
                next_index: first_index(),
            }),
        });
        let peers: Arc<dyn Peers> = table.clone();
        let (fail_tx, fail) = mpsc::channel();
        datapath::spawn(&tun, &udp, &peers, &fail_tx)?;
        tracing::info!(
            listen = %config.listen,
            device = %config.tun_name,
            offload = tun.tcp_gso(),
            "wireguard responder started"
        );
        Ok(Self {
            udp,
            table,
            fail,
            tun,
        })
    }

    pub fn peers(&self) -> PeerSet {
        PeerSet(self.table.clone())
    }

    /// Whether the tun device took the segmentation offloads.
    pub fn offload(&self) -> bool {
        self.tun.tcp_gso()
    }

    /// Drives every peer's timers until a packet thread fails; returns that failure.
    pub fn run(self) -> Error {
        let mut buf = vec![0u8; SLOT];
        loop {
            match self.fail.recv_timeout(TIMER_TICK) {
                Ok(e) => return e,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Error::Invalid("packet threads ended".into());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            datapath::update_timers(self.table.as_ref(), &self.udp, &mut buf);
        }
    }
}

impl PeerSet {
    /// Accepts `public_key` (with `preshared_key`) for tunnel addresses `cidr`, as `wg addconf`
    /// does: a known key keeps its session and gets `cidr` too (unless the preshared key changed:
    /// then it starts over), and `cidr` leaves any other peer that held it.
    pub fn add(&self, public_key: &Key, preshared_key: Option<&Key>, cidr: Ipv4Cidr) {
        let table = &self.0;
        let mut entries = table.entries.write().unwrap_or_else(PoisonError::into_inner);
        for entry in &mut entries.list {
            entry.allowed.retain(|c| *c != cidr);
        }
        let psk = preshared_key.map(|k| k.0);
        let known = entries
            .list
            .iter()
            .position(|e| e.key == public_key.0 && e.preshared == psk);
        if let Some(i) = known {
            entries.list[i].allowed.push(cidr);
            return;
        }
        entries.list.retain(|e| e.key != public_key.0);
        let index = entries.next_index;
        entries.next_index = (index + 1) & INDEX_MASK;
        let tunn = Tunn::new(
            table.secret.clone(),
            x25519::PublicKey::from(public_key.0),
            psk,
            None,
            index,
            None,
        );
        entries.list.push(Entry {
            key: public_key.0,
            preshared: psk,
            index,
            allowed: vec![cidr],
            peer: Arc::new(Peer::roaming(tunn)),
        });
    }
}

/// boringtun keeps 24 bits of a peer's index (the low 8 of the wire index are its session's).
const INDEX_MASK: u32 = 0x00ff_ffff;

/// Where this instance's peer indices start: differing between restarts, so that a client still
/// holding a session of the last instance does not land on another peer.
fn first_index() -> u32 {
    let nanos = std::time::UNIX_EPOCH
        .elapsed()
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (std::process::id() ^ nanos) & INDEX_MASK
}

struct Table {
    secret: x25519::StaticSecret,
    public: x25519::PublicKey,
    entries: RwLock<Entries>,
}

struct Entries {
    list: Vec<Entry>,
    next_index: u32,
}

struct Entry {
    key: [u8; 32],
    preshared: Option<[u8; 32]>,
    index: u32,
    allowed: Vec<Ipv4Cidr>,
    peer: Arc<Peer>,
}

impl Entries {
    /// The peer whose allowed IPs hold `ip` most specifically (cryptokey routing).
    fn route(&self, ip: Ipv4Addr) -> Option<&Entry> {
        self.list
            .iter()
            .filter_map(|e| {
                let best = e
                    .allowed
                    .iter()
                    .filter(|c| c.contains(ip))
                    .map(Ipv4Cidr::prefix)
                    .max()?;
                Some((best, e))
            })
            .max_by_key(|(prefix, _)| *prefix)
            .map(|(_, e)| e)
    }

    /// The peer of wire receiver index `receiver`.
    fn by_index(&self, receiver: u32) -> Option<&Entry> {
        self.list.iter().find(|e| e.index == receiver >> 8)
    }
}

impl Table {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Peers for Table {
    fn by_destination(&self, dst: Ipv4Addr) -> Option<Arc<Peer>> {
        self.read().route(dst).map(|e| e.peer.clone())
    }

    fn by_datagram(&self, datagram: &[u8]) -> Option<Arc<Peer>> {
        let entries = self.read();
        let entry = match Tunn::parse_incoming_packet(datagram).ok()? {
            Packet::HandshakeInit(init) => {
                let half = parse_handshake_anon(&self.secret, &self.public, &init).ok()?;
                entries.list.iter().find(|e| e.key == half.peer_static_public)
            }
            Packet::HandshakeResponse(r) => entries.by_index(r.receiver_idx),
            Packet::PacketCookieReply(c) => entries.by_index(c.receiver_idx),
            Packet::PacketData(d) => entries.by_index(d.receiver_idx),
        };
        entry.map(|e| e.peer.clone())
    }

    fn allows(&self, peer: &Arc<Peer>, src: Ipv4Addr) -> bool {
        self.read().route(src).is_some_and(|e| Arc::ptr_eq(&e.peer, peer))
    }

    fn all(&self) -> Vec<Arc<Peer>> {
        self.read().list.iter().map(|e| e.peer.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Key {
        Key([byte; 32])
    }

    fn cidr(text: &str) -> Ipv4Cidr {
        text.parse().unwrap()
    }

    fn table() -> Arc<Table> {
        let secret = x25519::StaticSecret::from([7u8; 32]);
        Arc::new(Table {
            public: x25519::PublicKey::from(&secret),
            secret,
            entries: RwLock::new(Entries {
                list: Vec::new(),
                next_index: INDEX_MASK,
            }),
        })
    }

    #[test]
    fn cidrs_route_to_their_peer_and_move_like_wg_addconf() {
        let table = table();
        let set = PeerSet(table.clone());
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        set.add(&key(1), None, cidr("198.19.77.2/32"));
        set.add(&key(2), None, cidr("198.19.77.3/32"));
        let one = table.by_destination(ip("198.19.77.2")).unwrap();
        let two = table.by_destination(ip("198.19.77.3")).unwrap();
        assert!(!Arc::ptr_eq(&one, &two));
        assert!(table.by_destination(ip("198.19.77.4")).is_none());
        assert!(table.allows(&one, ip("198.19.77.2")));
        assert!(!table.allows(&one, ip("198.19.77.3")));
        // The index wraps within 24 bits.
        assert_eq!(table.read().list[0].index, INDEX_MASK);
        assert_eq!(table.read().list[1].index, 0);

        // A third key takes .3 from the second; the first gets a wider range too, and the most
        // specific CIDR wins.
        set.add(&key(3), None, cidr("198.19.77.3/32"));
        set.add(&key(1), None, cidr("198.19.77.0/24"));
        let three = table.by_destination(ip("198.19.77.3")).unwrap();
        assert!(!Arc::ptr_eq(&three, &two));
        assert!(Arc::ptr_eq(
            &table.by_destination(ip("198.19.77.2")).unwrap(),
            &one
        ));
        assert!(Arc::ptr_eq(
            &table.by_destination(ip("198.19.77.9")).unwrap(),
            &one
        ));
        assert_eq!(table.all().len(), 3);

        // A known key keeps its session; a new preshared key starts a new one.
        set.add(&key(3), None, cidr("198.19.78.0/24"));
        assert!(Arc::ptr_eq(
            &table.by_destination(ip("198.19.78.1")).unwrap(),
            &three
        ));
        set.add(&key(3), Some(&key(9)), cidr("198.19.78.0/24"));
        let renewed = table.by_destination(ip("198.19.78.1")).unwrap();
        assert!(!Arc::ptr_eq(&renewed, &three));
        assert_eq!(table.all().len(), 3);
    }

    #[test]
    fn datagrams_find_their_peer_by_index_or_handshake_key() {
        let table = table();
        let set = PeerSet(table.clone());
        set.add(&key(1), None, cidr("198.19.77.2/32"));
        let client_secret = x25519::StaticSecret::from([1u8; 32]);
        let client_public = x25519::PublicKey::from(&client_secret);
        set.add(&Key(client_public.to_bytes()), None, cidr("198.19.77.3/32"));
        let peer = table.by_destination("198.19.77.3".parse().unwrap()).unwrap();

        // A real initiation from the second key, to this responder.
        let mut client = Tunn::new(client_secret, table.public, None, None, 5, None);
        let mut buf = [0u8; SLOT];
        let init = match client.format_handshake_initiation(&mut buf, false) {
            boringtun::noise::TunnResult::WriteToNetwork(p) => p.to_vec(),
            other => panic!("{other:?}"),
        };
        assert!(Arc::ptr_eq(&table.by_datagram(&init).unwrap(), &peer));
        // An initiation for another responder finds nobody.
        let mut stranger = Tunn::new(
            x25519::StaticSecret::from([1u8; 32]),
            x25519::PublicKey::from([8u8; 32]),
            None,
            None,
            6,
            None,
        );
        if let boringtun::noise::TunnResult::WriteToNetwork(p) =
            stranger.format_handshake_initiation(&mut buf, false)
        {
            assert!(table.by_datagram(p).is_none());
        }

        // A data message names the responder's index of the peer (shifted by 8 bits).
        let index = table.read().list[1].index;
        let mut data = vec![0u8; 32];
        data[0] = 4;
        data[4..8].copy_from_slice(&((index << 8) | 3).to_le_bytes());
        assert!(Arc::ptr_eq(&table.by_datagram(&data).unwrap(), &peer));
        data[4..8].copy_from_slice(&(((index + 7) & INDEX_MASK) << 8).to_le_bytes());
        assert!(table.by_datagram(&data).is_none());
        assert!(table.by_datagram(&[9, 0, 0]).is_none());
    }
}
