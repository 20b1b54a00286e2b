//! The PROXY protocol (HAProxy's, versions 1 and 2) in front of SSH: a TCP load balancer that
//! connects to the gateway on a client's behalf first sends one header naming the client's
//! address, which the gateway then reports (rate limits and the audit log key on it). Only
//! balancers the operator lists may send one; from anyone else a header would be a forged address.
//!
//! Written here rather than taken from a crate: the gateway needs the source address of a TCP
//! connection and nothing else, which is some hundred lines, read through a buffered reader so that
//! the SSH bytes after the header stay in place for russh.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// Which headers the SSH listener expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// No header: the TCP peer is the client.
    Off,
    /// Every connection starts with a version 1 (text) header.
    V1,
    /// Every connection starts with a version 2 (binary) header.
    V2,
    /// Every connection starts with a header of either version.
    Any,
}

impl Mode {
    fn accepts(self, version: u8) -> bool {
        matches!((self, version), (Self::Any, _) | (Self::V1, 1) | (Self::V2, 2))
    }
}

/// An IP network: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(ip)), 32, self.prefix) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => masked(u128::from(ip), 128, self.prefix) == u128::from(net),
            _ => false,
        }
    }
}

/// `value` (of `bits` bits) with all but its first `prefix` bits cleared.
fn masked(value: u128, bits: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let host_bits = u32::from(bits - prefix);
    (value >> host_bits) << host_bits
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not an IP network (expected e.g. 10.0.0.0/8 or fd00::/8)");
        let (addr, prefix) = s
            .trim()
            .split_once('/')
            .map_or((s.trim(), None), |(a, p)| (a, Some(p)));
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        let ip = ip.to_canonical();
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= bits).ok_or_else(bad)?,
            None => bits,
        };
        let value = match ip {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        if masked(value, bits, prefix) != value {
            return Err(format!("`{s}` has bits set past its prefix length"));
        }
        Ok(Self { network: ip, prefix })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("PROXY header from {0}, which is not a trusted balancer")]
    Untrusted(IpAddr),
    #[error("the connection does not start with a PROXY header")]
    Missing,
    #[error("PROXY protocol version {0} is not accepted here")]
    WrongVersion(u8),
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    #[error("the connection ended inside the PROXY header")]
    Truncated,
    #[error("reading the PROXY header: {0}")]
    Io(std::io::ErrorKind),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Self::Truncated
        } else {
            Self::Io(e.kind())
        }
    }
}

/// A version 1 header is at most 107 bytes, its final CRLF included.
const V1_MAX: usize = 107;
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 2 address block and extensions read; balancers send a few dozen bytes of
/// extensions at most, and the header must not become a way to make the gateway buffer much.
const V2_MAX_BODY: usize = 1024;

/// Whether a connection from `peer` may send a header at all.
pub fn check_source(peer: IpAddr, trusted: &[Cidr]) -> Result<(), Error> {
    if trusted.iter().any(|net| net.contains(peer)) {
        Ok(())
    } else {
        Err(Error::Untrusted(peer.to_canonical()))
    }
}

/// Reads the header at the start of `stream` and nothing past it: the client's address, or `peer`
/// when the header names none (a balancer's own health check, `UNKNOWN` or `LOCAL`).
pub async fn read_header<R: AsyncRead + Unpin>(
    stream: &mut R,
    mode: Mode,
    peer: SocketAddr,
) -> Result<SocketAddr, Error> {
    let first = stream.read_u8().await?;
    let (version, source) = match first {
        b'P' => {
            let mut line = vec![first];
            while !line.ends_with(b"\r\n") {
                if line.len() == V1_MAX {
                    return Err(Error::Malformed("version 1 line too long"));
                }
                line.push(stream.read_u8().await?);
            }
            (1, parse_v1(&line)?)
        }
        b'\r' => {
            let mut prefix = [0u8; 16];
            prefix[0] = first;
            stream.read_exact(&mut prefix[1..]).await?;
            let (command, family, len) = parse_v2_prefix(&prefix)?;
            let mut body = vec![0u8; len];
            stream.read_exact(&mut body).await?;
            (2, parse_v2_body(command, family, &body)?)
        }
        _ => return Err(Error::Missing),
    };
    if !mode.accepts(version) {
        return Err(Error::WrongVersion(version));
    }
    Ok(source.unwrap_or(peer))
}

/// `PROXY TCP4 1.2.3.4 5.6.7.8 1234 22\r\n`: the source address, or `None` for `UNKNOWN`.
fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, Error> {
    let text = std::str::from_utf8(line).map_err(|_| Error::Malformed("version 1 line is not text"))?;
    let text = text
        .strip_prefix("PROXY ")
        .and_then(|t| t.strip_suffix("\r\n"))
        .ok_or(Error::Missing)?;
    let mut fields = text.split(' ');
    let family = fields.next().unwrap_or_default();
    if family == "UNKNOWN" {
        return Ok(None);
    }
    let fields: Vec<&str> = fields.collect();
    let [src, dst, src_port, dst_port] = fields[..] else {
        return Err(Error::Malformed(
            "version 1 line needs four fields after the family",
        ));
    };
    // The destination is checked for form but not used: the gateway knows where it listens.
    let src = match family {
        "TCP4" => {
            v1_addr::<Ipv4Addr>(dst)?;
            IpAddr::V4(v1_addr::<Ipv4Addr>(src)?)
        }
        "TCP6" => {
            v1_addr::<Ipv6Addr>(dst)?;
            IpAddr::V6(v1_addr::<Ipv6Addr>(src)?)
        }
        _ => return Err(Error::Malformed("version 1 family is not TCP4, TCP6 or UNKNOWN")),
    };
    let port = v1_port(src_port)?;
    v1_port(dst_port)?;
    Ok(Some(SocketAddr::new(src, port)))
}

fn v1_addr<A: FromStr>(s: &str) -> Result<A, Error> {
    s.parse().map_err(|_| Error::Malformed("version 1 address"))
}

fn v1_port(s: &str) -> Result<u16, Error> {
    // No sign, no leading zeros: the specification's form, nothing looser.
    if s.is_empty() || s.starts_with('+') || (s.len() > 1 && s.starts_with('0')) {
        return Err(Error::Malformed("version 1 port"));
    }
    s.parse().map_err(|_| Error::Malformed("version 1 port"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Local,
    Proxy,
}

/// The fixed 16 bytes: the signature, version and command, family and protocol, body length.
fn parse_v2_prefix(prefix: &[u8; 16]) -> Result<(Command, u8, usize), Error> {
    if prefix[..12] != V2_SIGNATURE {
        return Err(Error::Missing);
    }
    if prefix[12] >> 4 != 2 {
        return Err(Error::Malformed("version 2 signature with another version"));
    }
    let command = match prefix[12] & 0x0f {
        0 => Command::Local,
        1 => Command::Proxy,
        _ => return Err(Error::Malformed("version 2 command")),
    };
    let len = usize::from(u16::from_be_bytes([prefix[14], prefix[15]]));
    if len > V2_MAX_BODY {
        return Err(Error::Malformed("version 2 header too long"));
    }
    Ok((command, prefix[13], len))
}

/// The addresses (and extensions, ignored) after the fixed part.
fn parse_v2_body(command: Command, family: u8, body: &[u8]) -> Result<Option<SocketAddr>, Error> {
    if command == Command::Local {
        return Ok(None);
    }
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    match family {
        // TCP or UDP over IPv4: source, destination, source port, destination port.
        0x11 | 0x12 => {
            let Some(src) = body.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
                return Err(Error::Malformed("version 2 IPv4 addresses cut short"));
            };
            if body.len() < 12 {
                return Err(Error::Malformed("version 2 IPv4 addresses cut short"));
            }
            Ok(Some(SocketAddr::new(IpAddr::from(src), port(8))))
        }
        0x21 | 0x22 => {
            let Some(src) = body.get(..16).and_then(|b| <[u8; 16]>::try_from(b).ok()) else {
                return Err(Error::Malformed("version 2 IPv6 addresses cut short"));
            };
            if body.len() < 36 {
                return Err(Error::Malformed("version 2 IPv6 addresses cut short"));
            }
            Ok(Some(SocketAddr::new(IpAddr::from(src), port(32))))
        }
        // Unspecified, or Unix sockets: no IP address to report.
        0x00 | 0x31 | 0x32 => Ok(None),
        _ => Err(Error::Malformed("version 2 address family")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "10.1.1.1:40000".parse().unwrap()
    }

    async fn read(bytes: &[u8], mode: Mode) -> (Result<SocketAddr, Error>, Vec<u8>) {
        let mut stream = bytes;
        let got = read_header(&mut stream, mode, peer()).await;
        (got, stream.to_vec())
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn v2_tcp4() -> Vec<u8> {
        let mut body = vec![192, 168, 7, 9, 10, 0, 0, 5];
        body.extend_from_slice(&51000u16.to_be_bytes());
        body.extend_from_slice(&2222u16.to_be_bytes());
        v2(1, 0x11, &body)
    }

    fn v2_tcp6() -> Vec<u8> {
        let src: Ipv6Addr = "fd12:3456::77".parse().unwrap();
        let dst: Ipv6Addr = "fd12:3456::1".parse().unwrap();
        let mut body = src.octets().to_vec();
        body.extend_from_slice(&dst.octets());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&2222u16.to_be_bytes());
        // An extension (a type, a length, a value) the gateway skips.
        body.extend_from_slice(&[0x04, 0x00, 0x02, 0xab, 0xcd]);
        v2(1, 0x21, &body)
    }

    #[tokio::test]
    async fn headers_that_parse() {
        let rows: Vec<(Vec<u8>, Mode, &str)> = vec![
            (
                b"PROXY TCP4 192.168.7.9 10.0.0.5 51000 2222\r\n".to_vec(),
                Mode::V1,
                "192.168.7.9:51000",
            ),
            (
                b"PROXY TCP4 192.168.7.9 10.0.0.5 51000 2222\r\n".to_vec(),
                Mode::Any,
                "192.168.7.9:51000",
            ),
            (
                b"PROXY TCP6 fd12:3456::77 fd12:3456::1 443 2222\r\n".to_vec(),
                Mode::V1,
                "[fd12:3456::77]:443",
            ),
            (b"PROXY UNKNOWN\r\n".to_vec(), Mode::V1, "10.1.1.1:40000"),
            (
                b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n".to_vec(),
                Mode::V1,
                "10.1.1.1:40000",
            ),
            (v2_tcp4(), Mode::V2, "192.168.7.9:51000"),
            (v2_tcp4(), Mode::Any, "192.168.7.9:51000"),
            (v2_tcp6(), Mode::V2, "[fd12:3456::77]:443"),
            // LOCAL: the balancer speaking for itself, even with addresses present.
            (
                v2(0, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]),
                Mode::V2,
                "10.1.1.1:40000",
            ),
            (v2(1, 0x00, &[]), Mode::V2, "10.1.1.1:40000"),
        ];
        for (bytes, mode, want) in rows {
            let mut stream = bytes.clone();
            stream.extend_from_slice(b"SSH-2.0-OpenSSH_9.6\r\n");
            let (got, rest) = read(&stream, mode).await;
            assert_eq!(
                got,
                Ok(want.parse().unwrap()),
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
            assert_eq!(rest, b"SSH-2.0-OpenSSH_9.6\r\n", "the SSH bytes stay for russh");
        }
    }

    #[tokio::test]
    async fn headers_that_are_refused() {
        let long = format!("PROXY TCP4 {} 10.0.0.5 1 2\r\n", "1".repeat(100));
        let rows: Vec<(Vec<u8>, Mode, Error)> = vec![
            (b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(), Mode::Any, Error::Missing),
            (b"PRIVET\r\n".to_vec(), Mode::Any, Error::Missing),
            (b"".to_vec(), Mode::Any, Error::Truncated),
            (
                b"PROXY TCP4 192.168.7.9 10.0.0.5 51000".to_vec(),
                Mode::V1,
                Error::Truncated,
            ),
            (v2_tcp4()[..20].to_vec(), Mode::V2, Error::Truncated),
            (v2_tcp4()[..10].to_vec(), Mode::V2, Error::Truncated),
            (
                long.into_bytes(),
                Mode::V1,
                Error::Malformed("version 1 line too long"),
            ),
            (
                b"PROXY TCP4 192.168.7.9 10.0.0.5 51000\r\n".to_vec(),
                Mode::V1,
                Error::Malformed("version 1 line needs four fields after the family"),
            ),
            (
                b"PROXY TCP4 fd00::1 10.0.0.5 1 2\r\n".to_vec(),
                Mode::V1,
                Error::Malformed("version 1 address"),
            ),
            (
                b"PROXY TCP4 192.168.7.9 10.0.0.5 65536 2\r\n".to_vec(),
                Mode::V1,
                Error::Malformed("version 1 port"),
            ),
            (
                b"PROXY TCP4 192.168.7.9 10.0.0.5 022 2\r\n".to_vec(),
                Mode::V1,
                Error::Malformed("version 1 port"),
            ),
            (
                b"PROXY UDP4 192.168.7.9 10.0.0.5 1 2\r\n".to_vec(),
                Mode::V1,
                Error::Malformed("version 1 family is not TCP4, TCP6 or UNKNOWN"),
            ),
            (
                b"PROXY TCP4  192.168.7.9 10.0.0.5 1 2\r\n".to_vec(),
                Mode::V1,
                Error::Malformed("version 1 line needs four fields after the family"),
            ),
            (
                b"PROXY TCP4 192.168.7.9 10.0.0.5 51000 2222\r\n".to_vec(),
                Mode::V2,
                Error::WrongVersion(1),
            ),
            (v2_tcp4(), Mode::V1, Error::WrongVersion(2)),
            (
                v2(1, 0x11, &[1, 2, 3, 4]),
                Mode::V2,
                Error::Malformed("version 2 IPv4 addresses cut short"),
            ),
            (
                v2(1, 0x21, &[0; 20]),
                Mode::V2,
                Error::Malformed("version 2 IPv6 addresses cut short"),
            ),
            (
                v2(1, 0x51, &[0; 12]),
                Mode::V2,
                Error::Malformed("version 2 address family"),
            ),
            (
                v2(2, 0x11, &[0; 12]),
                Mode::V2,
                Error::Malformed("version 2 command"),
            ),
            (
                {
                    let mut h = v2_tcp4();
                    h[12] = 0x11;
                    h
                },
                Mode::V2,
                Error::Malformed("version 2 signature with another version"),
            ),
            (
                {
                    let mut h = v2(1, 0x11, &[]);
                    h[14..16].copy_from_slice(&2000u16.to_be_bytes());
                    h
                },
                Mode::V2,
                Error::Malformed("version 2 header too long"),
            ),
            (
                {
                    let mut h = v2_tcp4();
                    h[5] = b'X';
                    h
                },
                Mode::V2,
                Error::Missing,
            ),
        ];
        for (bytes, mode, want) in rows {
            let (got, _) = read(&bytes, mode).await;
            assert_eq!(got, Err(want), "{:?}", String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn trusted_sources() {
        let trusted: Vec<Cidr> = ["10.0.0.0/8", "192.168.1.7", "fd00:ab::/32"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let rows = [
            ("10.200.3.4", true),
            ("11.0.0.1", false),
            ("192.168.1.7", true),
            ("192.168.1.8", false),
            ("::ffff:10.0.0.1", true),
            ("fd00:ab:1::9", true),
            ("fd00:ac::9", false),
            ("::1", false),
        ];
        for (ip, want) in rows {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(check_source(ip, &trusted).is_ok(), want, "{ip}");
        }
        assert_eq!(
            check_source("11.0.0.1".parse().unwrap(), &trusted),
            Err(Error::Untrusted("11.0.0.1".parse().unwrap()))
        );
        assert!(check_source("10.0.0.1".parse().unwrap(), &[]).is_err());
    }

    #[test]
    fn networks_parse() {
        for ok in ["0.0.0.0/0", "127.0.0.1", "10.0.0.0/8", "::/0", "fd00::/8", "::1"] {
            assert!(ok.parse::<Cidr>().is_ok(), "{ok}");
        }
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "fd00::/129",
            "nonsense",
            "10.0.0.0/",
            "/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }
}
