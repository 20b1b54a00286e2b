//! Machine identity: enrolment keys the operator makes, the per-node and per-gateway credentials
//! they are traded for, and the rules both follow. Decisions only; storage is in `db::enrolment_keys`,
//! `db::nodes` and `db::gateways`, the routes in `api::enrolment`.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;

use crate::db::UtcTime;

/// What an enrolment key may enrol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// A node agent (`POST /v1/agent/enrol`).
    Agent,
    /// An SSH gateway (`POST /v1/gateway/enrol`).
    Gateway,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Gateway => "gateway",
        }
    }
}

/// The parts of a key its validity depends on.
#[derive(Debug, Clone, Copy)]
pub struct KeyState {
    pub usage_limit: i64,
    pub uses: i64,
    pub expires_at: UtcTime,
    pub revoked: bool,
}

/// Why a key cannot enrol anything (any more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    Revoked,
    Expired,
    UsedUp,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::UsedUp => "used_up",
        }
    }
}

/// Whether `key` may enrol one more machine at `now`; revocation counts first, then expiry.
pub fn refusal(key: &KeyState, now: UtcTime) -> Option<Refusal> {
    if key.revoked {
        Some(Refusal::Revoked)
    } else if key.expires_at <= now {
        Some(Refusal::Expired)
    } else if key.uses >= key.usage_limit {
        Some(Refusal::UsedUp)
    } else {
        None
    }
}

/// Prefix of enrolment key secrets, so a leaked one is recognisable in logs and scanners.
pub const KEY_PREFIX: &str = "ccpk_";
/// Prefix of node and gateway credentials.
pub const CREDENTIAL_PREFIX: &str = "ccpn_";

/// A fresh secret: `prefix` and 43 random letters and digits (about 256 bits).
pub fn new_secret(prefix: &str) -> String {
    format!("{prefix}{}", crate::auth::password::generate(43))
}

/// SHA-256 of a secret, hex: what is stored and looked up. The secrets are random and long, so a
/// fast hash suffices.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A node's or gateway's name: 1-64 letters, digits, `.`, `_`, `-`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// An IPv4 network, `address/prefix`, with its host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

/// Why a hosts subnet is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    #[error("not an IPv4 network such as 172.18.0.0/16")]
    Syntax,
    #[error("must be inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10")]
    NotPrivate,
    #[error("must be no larger than a /16")]
    TooLarge,
}

/// The ranges a Docker node's hosts network may come from: the private ones Docker allocates from.
const PRIVATE: [(Ipv4Addr, u8); 4] = [
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(100, 64, 0, 0), 10),
];

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl Subnet {
    /// Parses and checks a node's hosts subnet: a private range no larger than a /16, so a node
    /// cannot claim addresses far beyond its own bridge.
    pub fn parse_hosts(text: &str) -> Result<Self, SubnetError> {
        let (addr, prefix) = text.trim().split_once('/').ok_or(SubnetError::Syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| SubnetError::Syntax)?;
        let prefix: u8 = prefix.parse().map_err(|_| SubnetError::Syntax)?;
        if prefix > 32 {
            return Err(SubnetError::Syntax);
        }
        let subnet = Self {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        };
        if !PRIVATE.iter().any(|&(net, len)| {
            len <= prefix
                && Self {
                    network: net,
                    prefix: len,
                }
                .contains(subnet.network)
        }) {
            return Err(SubnetError::NotPrivate);
        }
        if prefix < 16 {
            return Err(SubnetError::TooLarge);
        }
        Ok(subnet)
    }

    pub fn contains(self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.network)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Whether `address` (as an agent reports it) is a host address inside the node's `subnet`; a node
/// that never told its subnet has no acceptable address.
pub fn address_allowed(subnet: Option<&str>, address: &str) -> bool {
    let Some(subnet) = subnet.and_then(|s| Subnet::parse_hosts(s).ok()) else {
        return false;
    };
    address
        .parse::<Ipv4Addr>()
        .is_ok_and(|a| subnet.contains(a) && a != subnet.network)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> UtcTime {
        UtcTime::from(chrono::DateTime::from_timestamp(secs, 0).unwrap())
    }

    #[test]
    fn key_refusals() {
        let now = at(1_000);
        let key = |usage_limit, uses, expires, revoked| KeyState {
            usage_limit,
            uses,
            expires_at: at(expires),
            revoked,
        };
        let cases = [
            (key(1, 0, 2_000, false), None),
            (key(5, 4, 2_000, false), None),
            (key(1, 1, 2_000, false), Some(Refusal::UsedUp)),
            (key(5, 7, 2_000, false), Some(Refusal::UsedUp)),
            (key(1, 0, 1_000, false), Some(Refusal::Expired)),
            (key(1, 0, 999, false), Some(Refusal::Expired)),
            (key(1, 0, 2_000, true), Some(Refusal::Revoked)),
            (key(1, 1, 999, true), Some(Refusal::Revoked)),
            (key(1, 1, 999, false), Some(Refusal::Expired)),
        ];
        for (state, want) in cases {
            assert_eq!(refusal(&state, now), want, "{state:?}");
        }
    }

    #[test]
    fn hosts_subnets() {
        let ok = |s: &str| Subnet::parse_hosts(s).map(|n| n.to_string());
        assert_eq!(ok("172.18.0.0/16"), Ok("172.18.0.0/16".into()));
        assert_eq!(ok("172.18.5.9/16"), Ok("172.18.0.0/16".into()));
        assert_eq!(ok("192.168.48.0/20"), Ok("192.168.48.0/20".into()));
        assert_eq!(ok("10.7.0.0/24"), Ok("10.7.0.0/24".into()));
        assert_eq!(ok("100.64.3.0/24"), Ok("100.64.3.0/24".into()));
        assert_eq!(ok("10.0.0.0/8"), Err(SubnetError::TooLarge));
        assert_eq!(ok("0.0.0.0/0"), Err(SubnetError::NotPrivate));
        assert_eq!(ok("172.0.0.0/8"), Err(SubnetError::NotPrivate));
        assert_eq!(ok("8.8.8.0/24"), Err(SubnetError::NotPrivate));
        assert_eq!(ok("198.18.0.0/16"), Err(SubnetError::NotPrivate));
        assert_eq!(ok("172.18.0.0"), Err(SubnetError::Syntax));
        assert_eq!(ok("172.18.0.0/33"), Err(SubnetError::Syntax));
        assert_eq!(ok("fd00::/64"), Err(SubnetError::Syntax));
    }

    #[test]
    fn addresses_inside_the_nodes_network_only() {
        let net = Some("172.18.0.0/16");
        let cases = [
            (net, "172.18.0.5", true),
            (net, "172.18.255.254", true),
            (net, "172.18.0.0", false),
            (net, "172.19.0.5", false),
            (net, "10.0.0.1", false),
            (net, "127.0.0.1", false),
            (net, "not-an-ip", false),
            (net, "::1", false),
            (None, "172.18.0.5", false),
            (Some("garbage"), "172.18.0.5", false),
        ];
        for (subnet, address, want) in cases {
            assert_eq!(address_allowed(subnet, address), want, "{subnet:?} {address}");
        }
    }

    #[test]
    fn secrets_are_prefixed_random_and_hashed() {
        let a = new_secret(KEY_PREFIX);
        let b = new_secret(KEY_PREFIX);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 43);
        assert_ne!(a, b);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a).len(), 64);
    }

    #[test]
    fn names() {
        for good in ["n1", "node-a.example", "A_b"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "a b", "a/b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
