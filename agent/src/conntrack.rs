//! Flushing the connection-tracking table of the current network namespace over ctnetlink, the
//! kernel interface `conntrack -F` uses (the node need not have conntrack-tools). An egress test
//! namespace that is used again flushes it between tests, so no flow (a DNS rewrite, a connection
//! to the previous tunnel server) carries over from one test into the next.
//!
//! Called from a thread that has entered the namespace ([`crate::netns::run_in`]).

use std::io::Read as _;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

const AF_NETLINK: i32 = 16;
const NETLINK_NETFILTER: i32 = 12;
/// `NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE`: a delete without a tuple deletes all.
const CT_DELETE: u16 = (1 << 8) | 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 2;
const HEADER_LEN: usize = 16;
/// `ENOENT`: nothing to delete (older kernels answer so for an empty table).
const ENOENT: i32 = 2;

/// How long the kernel's acknowledgement may take.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ctnetlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("ctnetlink answered with a message of type {0}, not an acknowledgement")]
    Unexpected(u16),
    #[error("flushing conntrack: {0}")]
    Refused(std::io::Error),
}

/// The request: a netlink header and an `nfgenmsg` for every address family.
pub fn flush_request(seq: u32) -> Vec<u8> {
    let len = u32::try_from(HEADER_LEN + 4).unwrap_or(u32::MAX);
    let mut msg = Vec::with_capacity(HEADER_LEN + 4);
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&CT_DELETE.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills ours in
    // nfgenmsg: family AF_UNSPEC (all), version NFNETLINK_V0, resource id 0 (big endian).
    msg.extend_from_slice(&[0, 0, 0, 0]);
    msg
}

/// Reads the kernel's answer: `Ok` for an acknowledgement (error 0, or nothing to delete).
pub fn parse_ack(answer: &[u8]) -> Result<(), Error> {
    let field = |at: usize| answer.get(at..at + 4).and_then(|b| <[u8; 4]>::try_from(b).ok());
    let kind = answer
        .get(4..6)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map(u16::from_ne_bytes)
        .ok_or(Error::Unexpected(0))?;
    if kind != NLMSG_ERROR {
        return Err(Error::Unexpected(kind));
    }
    let code = field(HEADER_LEN)
        .map(i32::from_ne_bytes)
        .ok_or(Error::Unexpected(kind))?;
    match -code {
        0 | ENOENT => Ok(()),
        errno => Err(Error::Refused(std::io::Error::from_raw_os_error(errno))),
    }
}

/// Deletes every tracked connection of the calling thread's network namespace.
pub fn flush() -> Result<(), Error> {
    let socket = Socket::new(
        Domain::from(AF_NETLINK),
        Type::RAW,
        Some(Protocol::from(NETLINK_NETFILTER)),
    )?;
    socket.set_read_timeout(Some(ACK_TIMEOUT))?;
    // Unconnected and unaddressed, a netlink message goes to the kernel.
    socket.send(&flush_request(1))?;
    let mut answer = [0u8; 256];
    let n = (&socket).read(&mut answer)?;
    parse_ack(&answer[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_a_ctnetlink_delete_of_everything() {
        let msg = flush_request(7);
        assert_eq!(msg.len(), 20);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()), 20);
        assert_eq!(u16::from_ne_bytes(msg[4..6].try_into().unwrap()), 0x0102);
        assert_eq!(u16::from_ne_bytes(msg[6..8].try_into().unwrap()), 0x5);
        assert_eq!(u32::from_ne_bytes(msg[8..12].try_into().unwrap()), 7);
        assert_eq!(&msg[16..], &[0, 0, 0, 0]);
    }

    fn answer(kind: u16, code: i32) -> Vec<u8> {
        let mut a = vec![0u8; 4];
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(&[0; 10]);
        a.extend_from_slice(&code.to_ne_bytes());
        a
    }

    #[test]
    fn acknowledgements_are_read() {
        assert!(parse_ack(&answer(NLMSG_ERROR, 0)).is_ok());
        assert!(parse_ack(&answer(NLMSG_ERROR, -2)).is_ok());
        assert!(matches!(
            parse_ack(&answer(NLMSG_ERROR, -1)),
            Err(Error::Refused(_))
        ));
        assert!(matches!(parse_ack(&answer(3, 0)), Err(Error::Unexpected(3))));
        assert!(parse_ack(&[1, 2]).is_err());
    }

    #[test]
    fn flushing_works_in_a_namespace_of_its_own() {
        // Never the node's own table: a thread unshares a fresh network namespace first (root only).
        let done = std::thread::spawn(|| {
            if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                crate::skip_unless_required("CCP_REQUIRE_NETNS", "cannot make a network namespace here");
                return Ok(());
            }
            flush()
        })
        .join()
        .unwrap();
        done.unwrap();
    }
}
