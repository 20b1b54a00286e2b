//! The WireGuard fields of an egress IP: validation and normalization of what the operator types, and the
//! key pair the system generates for its own side of the tunnel.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use x25519_dalek::{PublicKey, StaticSecret};

use super::proxy::{ConfigError, check_dial_host};

/// Allowed IPs when the operator gives none: everything goes through the tunnel.
pub const DEFAULT_ALLOWED_IPS: &str = "0.0.0.0/0, ::/0";

/// Checks a WireGuard key (public or preshared) in the form `wg` prints: standard base64 of 32 bytes.
/// The message never repeats the value, as a preshared key is a secret.
pub fn validate_key(field: &str, s: &str) -> Result<(), ConfigError> {
    match STANDARD.decode(s) {
        Ok(bytes) if bytes.len() == 32 => Ok(()),
        _ => Err(ConfigError::new(
            field,
            "must be a WireGuard key: base64 of 32 bytes (44 characters ending in '='), as wg prints it",
        )),
    }
}

/// A peer endpoint split into host (IP or DNS name, IPv6 without brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses `host:port` or `[v6]:port`.
pub fn validate_endpoint(field: &str, s: &str) -> Result<Endpoint, ConfigError> {
    let form = || {
        ConfigError::new(
            field,
            "must be host:port or [IPv6]:port, e.g. vpn.example.com:51820",
        )
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(form)?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(ConfigError::new(
                field,
                "must hold an IPv6 address between the brackets",
            ));
        }
        (host, port)
    } else {
        let (host, port) = s.rsplit_once(':').ok_or_else(form)?;
        if host.contains(':') {
            return Err(ConfigError::new(
                field,
                "an IPv6 address needs brackets: [2001:db8::1]:51820",
            ));
        }
        (host, port)
    };
    check_dial_host(field, host)?;
    let port = parse_port(port).ok_or_else(|| ConfigError::new(field, "port must be from 1 to 65535"))?;
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|port| *port != 0)
}

/// Parses comma-separated CIDRs (a bare address counts as a single host) and returns them normalized:
/// canonical addresses with host bits cleared, as `wg` shows them, joined by `", "`.
pub fn validate_allowed_ips(field: &str, s: &str) -> Result<String, ConfigError> {
    let mut out = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        let (addr, prefix) = parse_cidr(item).ok_or_else(|| {
            ConfigError::new(
                field,
                "must be comma-separated CIDRs such as 0.0.0.0/0, ::/0 (a bare address is one host)",
            )
        })?;
        out.push(format!("{}/{prefix}", network_address(addr, prefix)));
    }
    Ok(out.join(", "))
}

/// Parses our tunnel address, an address with its prefix (a bare address gets /32 or /128), and returns it
/// normalized. The host bits are kept: this is an interface address, not a route.
pub fn validate_peer_address(field: &str, s: &str) -> Result<String, ConfigError> {
    let (addr, prefix) = parse_cidr(s)
        .ok_or_else(|| ConfigError::new(field, "must be an address with a prefix, e.g. 10.0.0.2/32"))?;
    if addr.is_unspecified() || addr.is_multicast() {
        return Err(ConfigError::new(field, "must be a unicast address"));
    }
    Ok(format!("{addr}/{prefix}"))
}

/// Checks the resolver the host uses through the tunnel.
pub fn validate_dns_server(field: &str, s: &str) -> Result<IpAddr, ConfigError> {
    match s.parse::<IpAddr>() {
        Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() => Ok(ip),
        _ => Err(ConfigError::new(field, "must be an IP address, e.g. 1.1.1.1")),
    }
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = match s.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (s, None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse().ok()?
        }
        Some(_) => return None,
    };
    (prefix <= max).then_some((addr, prefix))
}

fn network_address(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// A new key pair from the operating system's CSPRNG: (private, public), both base64 as `wg` prints them.
pub fn generate_keypair() -> (String, String) {
    generate_keypair_with(OsRng)
}

/// A new key pair from `rng`, so tests can fix the randomness.
pub fn generate_keypair_with<R: RngCore + CryptoRng>(rng: R) -> (String, String) {
    let mut private = StaticSecret::random_from_rng(rng).to_bytes();
    // Clamp as `wg genkey` does. X25519 clamps anyway, so the public key is the same; stored keys simply look
    // like the ones WireGuard's own tools produce.
    private[0] &= 248;
    private[31] &= 127;
    private[31] |= 64;
    let secret = StaticSecret::from(private);
    let public = PublicKey::from(&secret);
    (
        STANDARD.encode(secret.to_bytes()),
        STANDARD.encode(public.as_bytes()),
    )
}

/// The public key of a base64 private key, as `wg pubkey` computes it; `None` if it is not 32 bytes of
/// base64.
pub fn public_key_of(private_b64: &str) -> Option<String> {
    let bytes: [u8; 32] = STANDARD.decode(private_b64).ok()?.try_into().ok()?;
    let public = PublicKey::from(&StaticSecret::from(bytes));
    Some(STANDARD.encode(public.as_bytes()))
}

/// The public half of a sealed private key. A key that does not open shows as no key, and the
/// failure is logged: a view must not fail over a value it only summarises.
pub fn public_key_of_sealed(
    key: &crate::secrets::SecretsKey,
    field: &str,
    sealed: Option<&crate::secrets::Sealed>,
) -> Option<String> {
    match sealed?.open(key, field) {
        Ok(private) => public_key_of(&private),
        Err(error) => {
            tracing::error!(%error, field, "a stored WireGuard private key does not open");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const F: &str = "wg_field";

    #[test]
    fn keys_are_base64_of_32_bytes() {
        validate_key(F, "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=").unwrap();
        for bad in [
            "",
            "PeerPublicKeyBase64",
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo", // padding missing
            "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo=", // URL-safe alphabet
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo= ", // trailing space
            "8JCsPssfgS8tiRwiMlhARg==",                    // 16 bytes
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmp=", // non-canonical last character
        ] {
            let err = validate_key(F, bad).unwrap_err();
            assert_eq!(err.field, F);
            assert!(bad.is_empty() || !err.message.contains(bad), "{bad:?} echoed");
        }
    }

    #[test]
    fn endpoints() {
        let ok = [
            (
                "vpn-provider.example.com:51820",
                "vpn-provider.example.com",
                51820,
            ),
            ("203.0.113.10:51820", "203.0.113.10", 51820),
            ("[2001:db8::1]:51820", "2001:db8::1", 51820),
            ("new-endpoint:1", "new-endpoint", 1),
        ];
        for (input, host, port) in ok {
            let endpoint = validate_endpoint(F, input).unwrap();
            assert_eq!(
                endpoint,
                Endpoint {
                    host: host.to_owned(),
                    port
                }
            );
            assert_eq!(endpoint.to_string(), input);
        }
        for bad in [
            "",
            "vpn.example.com",
            "vpn.example.com:",
            "vpn.example.com:0",
            "vpn.example.com:65536",
            "vpn.example.com:+80",
            ":51820",
            "2001:db8::1:51820",
            "[vpn.example.com]:51820",
            "[2001:db8::1]51820",
            "[::]:51820",
            "0.0.0.0:51820",
            "vpn example.com:51820",
            "http://vpn.example.com:51820",
        ] {
            assert_eq!(validate_endpoint(F, bad).unwrap_err().field, F, "{bad:?}");
        }
    }

    #[test]
    fn allowed_ips_are_normalized() {
        let cases = [
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("0.0.0.0/0,::/0", "0.0.0.0/0, ::/0"),
            (" 10.1.2.3/8 , 2001:DB8:0::5/32 ", "10.0.0.0/8, 2001:db8::/32"),
            ("192.0.2.7", "192.0.2.7/32"),
            ("2001:db8::7", "2001:db8::7/128"),
            ("192.0.2.7/31", "192.0.2.6/31"),
        ];
        for (input, normalized) in cases {
            assert_eq!(validate_allowed_ips(F, input).unwrap(), normalized, "{input}");
        }
        assert_eq!(
            validate_allowed_ips(F, DEFAULT_ALLOWED_IPS).unwrap(),
            DEFAULT_ALLOWED_IPS
        );
        for bad in [
            "",
            " ",
            "0.0.0.0/0,",
            "0.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0/8",
            "any",
            "10.0.0.0/8;::/0",
        ] {
            assert_eq!(validate_allowed_ips(F, bad).unwrap_err().field, F, "{bad:?}");
        }
    }

    #[test]
    fn peer_address_keeps_host_bits() {
        assert_eq!(validate_peer_address(F, "10.0.0.2/32").unwrap(), "10.0.0.2/32");
        assert_eq!(validate_peer_address(F, "10.0.0.2/24").unwrap(), "10.0.0.2/24");
        assert_eq!(validate_peer_address(F, "10.0.0.2").unwrap(), "10.0.0.2/32");
        assert_eq!(validate_peer_address(F, "FD00::0002").unwrap(), "fd00::2/128");
        for bad in [
            "",
            "10.0.0.2/33",
            "0.0.0.0/0",
            "224.0.0.1/32",
            "10.0.0.2/32, fd00::2/128",
            "host",
        ] {
            assert_eq!(validate_peer_address(F, bad).unwrap_err().field, F, "{bad:?}");
        }
    }

    #[test]
    fn dns_server_is_an_ip() {
        assert_eq!(
            validate_dns_server(F, "1.1.1.1").unwrap(),
            IpAddr::from([1, 1, 1, 1])
        );
        validate_dns_server(F, "2606:4700:4700::1111").unwrap();
        for bad in ["", "one.one.one.one", "1.1.1.1:53", "0.0.0.0", "1.1.1.1/32"] {
            assert_eq!(validate_dns_server(F, bad).unwrap_err().field, F, "{bad:?}");
        }
    }

    #[test]
    fn public_key_matches_known_vectors() {
        // RFC 7748 §6.1, Alice's key pair; `wg pubkey` gives the same answer.
        assert_eq!(
            public_key_of("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=").as_deref(),
            Some("hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=")
        );
        // A pair from `wg genkey | tee /dev/stderr | wg pubkey`.
        assert_eq!(
            public_key_of("8GtJr92tzy6cWHgOBC/PEr5Fh9XKuBEjGOCVYqTegm4=").as_deref(),
            Some("eX8lG4DoTk3FmBfnp+rdj14M5r0/N5MB05aw9ePH43A=")
        );
        assert_eq!(public_key_of("not a key"), None);
        assert_eq!(public_key_of("8JCsPssfgS8tiRwiMlhARg=="), None);
    }

    #[test]
    fn generated_pairs_are_valid_and_consistent() {
        let (private, public) = generate_keypair();
        validate_key(F, &private).unwrap();
        validate_key(F, &public).unwrap();
        assert_eq!(public_key_of(&private).as_deref(), Some(public.as_str()));
        let bytes = STANDARD.decode(&private).unwrap();
        assert_eq!(bytes[0] & 7, 0);
        assert_eq!(bytes[31] & 0xc0, 0x40);
        assert_ne!(generate_keypair().0, private);
    }

    #[test]
    fn keypair_generation_is_a_function_of_the_rng() {
        let a = generate_keypair_with(StdRng::seed_from_u64(7));
        let b = generate_keypair_with(StdRng::seed_from_u64(7));
        assert_eq!(a, b);
        assert_eq!(public_key_of(&a.0), Some(a.1));
    }
}
