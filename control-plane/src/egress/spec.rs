//! What an agent needs to run an egress IP's tunnel: the stored row turned into a
//! [`wire::EgressSpec`], secrets included (it goes only to agents, over their authenticated API).
//! This is where the sealed tunnel secrets are opened.

use std::net::Ipv4Addr;

use crate::db::bindings::Binding;
use crate::db::egress_ips::{EgressIp, TunnelType};
use crate::secrets::{Sealed, SecretsKey, field};

/// Why an egress IP cannot be run as it is stored.
#[derive(Debug, thiserror::Error)]
#[error("egress IP {label}: {reason}")]
pub struct Unusable {
    pub label: String,
    pub reason: String,
}

/// The tunnel spec of `e`. `default_dns` (`EGRESS_DNS_SERVER`) is the resolver behind the tunnel
/// when the egress IP names none. With a `binding`, WireGuard uses the host's own key pair and
/// tunnel address; without (an egress test), the egress IP's.
pub fn of(
    e: &EgressIp,
    binding: Option<&Binding>,
    key: &SecretsKey,
    default_dns: Ipv4Addr,
) -> Result<wire::EgressSpec, Unusable> {
    let unusable = |reason: &str| Unusable {
        label: e.label.clone(),
        reason: reason.to_owned(),
    };
    let open = |sealed: Option<&Sealed>, name: &str| {
        sealed
            .map(|s| s.open(key, name))
            .transpose()
            .map_err(|err| unusable(&format!("{name}: {err}")))
    };
    let (dns_server, tunnel) = match e.tunnel_type {
        TunnelType::Wireguard => {
            let need = |v: &Option<String>, name: &str| {
                v.clone()
                    .filter(|s| !s.trim().is_empty())
                    .ok_or_else(|| unusable(&format!("{name} is not set")))
            };
            // The namespace has no IPv6 way out: only the IPv4 part of the allowed IPs is routed.
            let allowed_ips: Vec<String> = e
                .wg_allowed_ips
                .as_deref()
                .unwrap_or(super::wireguard::DEFAULT_ALLOWED_IPS)
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty() && !c.contains(':'))
                .map(str::to_owned)
                .collect();
            if allowed_ips.is_empty() {
                return Err(unusable("wg_allowed_ips holds no IPv4 network"));
            }
            let tunnel = wire::Tunnel::Wireguard(wire::WireguardSpec {
                endpoint: need(&e.wg_endpoint, "wg_endpoint")?,
                peer_public_key: need(&e.wg_public_key, "wg_public_key")?,
                preshared_key: open(e.wg_preshared_key.as_ref(), field::EGRESS_WG_PRESHARED_KEY)?
                    .filter(|k| !k.is_empty()),
                private_key: need(
                    &match binding.and_then(|b| b.wg_private_key.as_ref()) {
                        Some(own) => open(Some(own), field::BINDING_WG_PRIVATE_KEY)?,
                        None => open(e.wg_private_key.as_ref(), field::EGRESS_WG_PRIVATE_KEY)?,
                    },
                    "the generated key pair",
                )?,
                allowed_ips,
                address: need(
                    &binding
                        .and_then(|b| b.wg_peer_address.clone())
                        .or_else(|| e.wg_peer_address.clone()),
                    "wg_peer_address",
                )?,
            });
            (e.wg_dns_server.as_deref(), tunnel)
        }
        TunnelType::Proxy => {
            let raw = open(e.proxy_config.as_ref(), field::EGRESS_PROXY_CONFIG)?
                .ok_or_else(|| unusable("proxy_config is not set"))?;
            let value: serde_json::Value =
                serde_json::from_str(&raw).map_err(|_| unusable("proxy_config is not JSON"))?;
            // Checked again as it is stored: the agent gets only what the API would accept today.
            let outbound = wire::proxy::parse(&value)
                .map_err(|e| unusable(&format!("proxy_config is not valid: {e}")))?;
            (
                e.dns_server.as_deref(),
                wire::Tunnel::Proxy {
                    outbound: Box::new(outbound),
                },
            )
        }
    };
    let dns_server = match dns_server.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => s
            .parse::<Ipv4Addr>()
            .map_err(|_| unusable("the DNS server must be an IPv4 address"))?,
        None => default_dns,
    };
    Ok(wire::EgressSpec {
        egress_ip_id: e.id.clone(),
        declared_ip: e.ip_address.clone(),
        dns_server: dns_server.to_string(),
        tunnel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::UtcTime;

    fn key() -> SecretsKey {
        SecretsKey::new(&[5; 32])
    }

    fn sealed(name: &str, plain: &str) -> Option<Sealed> {
        Some(Sealed::seal(&key(), name, plain))
    }

    fn row(tunnel_type: TunnelType) -> EgressIp {
        let now = UtcTime::now();
        EgressIp {
            id: "e1".into(),
            label: "fra-1".into(),
            ip_address: "198.18.5.5".into(),
            tunnel_type,
            provider: "manual".into(),
            wg_endpoint: Some("198.18.5.5:51820".into()),
            wg_public_key: Some("peer".into()),
            wg_preshared_key: None,
            wg_allowed_ips: Some("0.0.0.0/0, ::/0".into()),
            wg_dns_server: Some("10.64.0.1".into()),
            wg_peer_address: Some("10.64.0.2/32".into()),
            wg_private_key: sealed(field::EGRESS_WG_PRIVATE_KEY, "private"),
            proxy_config: sealed(
                field::EGRESS_PROXY_CONFIG,
                r#"{"type":"socks","server":"198.18.6.6","server_port":1080}"#,
            ),
            dns_server: None,
            observed_ip: None,
            last_test_at: None,
            last_test_result: None,
            created_at: now,
            updated_at: now,
            bound_hosts: 0,
        }
    }

    const DEFAULT_DNS: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 9);

    #[test]
    fn wireguard_routes_ipv4_only_and_uses_its_dns_server() {
        let spec = of(&row(TunnelType::Wireguard), None, &key(), DEFAULT_DNS).unwrap();
        assert_eq!(spec.dns_server, "10.64.0.1");
        let wire::Tunnel::Wireguard(wg) = spec.tunnel else {
            panic!("not wireguard")
        };
        assert_eq!(wg.allowed_ips, vec!["0.0.0.0/0".to_owned()]);
        assert_eq!(wg.private_key, "private");
    }

    #[test]
    fn a_binding_brings_the_hosts_own_key_and_address() {
        let binding = Binding {
            id: "b1".into(),
            host_id: "h1".into(),
            egress_ip_id: "e1".into(),
            wg_private_key: sealed(field::BINDING_WG_PRIVATE_KEY, "host-private"),
            wg_peer_address: Some("10.64.0.7/32".into()),
            created_at: UtcTime::now(),
        };
        let spec = of(&row(TunnelType::Wireguard), Some(&binding), &key(), DEFAULT_DNS).unwrap();
        let wire::Tunnel::Wireguard(wg) = spec.tunnel else {
            panic!("not wireguard")
        };
        assert_eq!(
            (wg.private_key.as_str(), wg.address.as_str()),
            ("host-private", "10.64.0.7/32")
        );
        let older = Binding {
            wg_private_key: None,
            wg_peer_address: None,
            ..binding
        };
        let spec = of(&row(TunnelType::Wireguard), Some(&older), &key(), DEFAULT_DNS).unwrap();
        let wire::Tunnel::Wireguard(wg) = spec.tunnel else {
            panic!("not wireguard")
        };
        assert_eq!(
            (wg.private_key.as_str(), wg.address.as_str()),
            ("private", "10.64.0.2/32")
        );
    }

    #[test]
    fn proxy_falls_back_to_the_default_dns_server() {
        let spec = of(&row(TunnelType::Proxy), None, &key(), DEFAULT_DNS).unwrap();
        assert_eq!(spec.dns_server, "198.18.9.9");
        assert!(matches!(spec.tunnel, wire::Tunnel::Proxy { ref outbound } if outbound.server().1 == 1080));
    }

    #[test]
    fn missing_pieces_are_named() {
        let mut e = row(TunnelType::Wireguard);
        e.wg_peer_address = None;
        assert!(
            of(&e, None, &key(), DEFAULT_DNS)
                .unwrap_err()
                .to_string()
                .contains("wg_peer_address")
        );
        let mut e = row(TunnelType::Wireguard);
        e.wg_allowed_ips = Some("::/0".into());
        assert!(of(&e, None, &key(), DEFAULT_DNS).is_err());
        let mut e = row(TunnelType::Proxy);
        e.dns_server = Some("resolver.test".into());
        assert!(of(&e, None, &key(), DEFAULT_DNS).is_err());
    }

    #[test]
    fn secrets_sealed_under_another_key_or_column_make_it_unusable() {
        let mut e = row(TunnelType::Wireguard);
        e.wg_preshared_key = Some(Sealed::seal(
            &SecretsKey::new(&[6; 32]),
            field::EGRESS_WG_PRESHARED_KEY,
            "k",
        ));
        let err = of(&e, None, &key(), DEFAULT_DNS).unwrap_err().to_string();
        assert!(err.contains("wg_preshared_key"), "{err}");
        let mut e = row(TunnelType::Proxy);
        e.proxy_config = sealed(field::HOST_VNC_SECRET, "{}");
        assert!(of(&e, None, &key(), DEFAULT_DNS).is_err());
        let mut e = row(TunnelType::Wireguard);
        e.wg_preshared_key = sealed(field::EGRESS_WG_PRESHARED_KEY, "psk");
        let wire::Tunnel::Wireguard(wg) = of(&e, None, &key(), DEFAULT_DNS).unwrap().tunnel else {
            panic!("not wireguard")
        };
        assert_eq!(wg.preshared_key.as_deref(), Some("psk"));
    }
}
