//! A host's firewall: the hosts bridge, the ruleset of its namespace and the choice of its egress
//! (tunnel, direct or deny, made by the pure [`egress_rules`]), and the cuts traffic quotas make.

use super::*;

impl Hosts {
    /// Whether a traffic quota cut the host's egress.
    pub fn egress_cut(&self, host_id: &str) -> bool {
        self.cut.lock().is_ok_and(|cut| cut.contains(host_id))
    }

    pub(super) fn set_egress_cut(&self, host_id: &str, cut: bool) -> bool {
        let Ok(mut set) = self.cut.lock() else {
            return false;
        };
        if cut {
            set.insert(host_id.to_owned())
        } else {
            set.remove(host_id)
        }
    }

    /// Takes the cut flags of a heartbeat reply; returns the hosts whose flag changed, whose
    /// firewall must be installed again.
    pub fn update_egress_cuts(&self, desired: &[wire::DesiredHost]) -> Vec<String> {
        let Ok(mut set) = self.cut.lock() else {
            return Vec::new();
        };
        let wanted: std::collections::HashSet<String> = desired
            .iter()
            .filter(|d| d.egress_cut)
            .map(|d| d.host_id.clone())
            .collect();
        let changed = set.symmetric_difference(&wanted).cloned().collect();
        *set = wanted;
        changed
    }

    /// Installs the firewall of a running host again after its cut flag changed. Fails closed:
    /// a host that should be cut and whose rules could not be installed is stopped.
    pub async fn enforce_egress_cut(&self, host_id: &str) -> Result<(), Error> {
        let Some(short_id) = self.short_id_of(host_id).await? else {
            return Ok(());
        };
        let names = self.names(&short_id);
        let running = self
            .docker
            .inspect_container(&names.egress)
            .await?
            .is_some_and(|c| RunState::of(&c) == RunState::Running);
        if !running {
            return Ok(());
        }
        let cut = self.egress_cut(host_id);
        match self.repair(host_id, false).await {
            Ok(()) => {
                tracing::info!(host_id, cut, "egress cut changed; firewall installed");
                Ok(())
            }
            Err(e) if cut => {
                tracing::error!(host_id, error = %e, "cannot cut the host's egress; stopping the host");
                self.docker.stop_container(&names.host, STOP_GRACE).await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The node's hosts bridge, created if missing. The reconciler removes it when the node has no
    /// host left; made again, it gets the subnet it first had, which the control plane holds the
    /// node to (host addresses outside it are refused). Should another network hold that subnet
    /// by then, creating fails and says so, rather than moving the hosts elsewhere.
    pub async fn ensure_network(&self) -> Result<docker::BridgeInfo, Error> {
        let labels = labels_for(&self.settings.node_name, Role::Network, None);
        let remembered = self
            .store
            .hosts_subnet()
            .map(|(subnet, gateway)| docker::BridgeInfo { subnet, gateway });
        let bridge = self
            .docker
            .ensure_network(&self.settings.hosts_network, &labels, remembered.as_ref())
            .await?;
        if remembered.is_none() {
            self.store
                .remember_hosts_subnet(&bridge.subnet, &bridge.gateway)?;
        }
        Ok(bridge)
    }

    /// Renders and installs the ruleset into the running egress container's namespace; returns the
    /// pid whose namespace got it. `cut`: a traffic quota cut the host's egress, nothing leaves.
    pub async fn apply_firewall(
        &self,
        names: &Names,
        bridge: &docker::BridgeInfo,
        runtime: Option<&RuntimeConfig>,
        cut: bool,
    ) -> Result<i64, Error> {
        let egress = self.require_running(&names.egress).await?;
        let pid = container_pid(&egress).ok_or_else(|| Error::NotRunning(names.egress.clone()))?;
        let spec = self.firewall_spec(bridge, runtime, cut).await?;
        firewall::apply(pid, &firewall::render(&spec), self.settings.command_timeout).await?;
        // The pid could have been recycled by a restart between inspect and nsenter.
        let again = self.require_running(&names.egress).await?;
        if container_pid(&again) != Some(pid) {
            return Err(Error::NamespaceChanged);
        }
        tracing::debug!(container = %names.egress, pid, "firewall installed");
        Ok(pid)
    }

    pub(super) async fn firewall_spec(
        &self,
        bridge: &docker::BridgeInfo,
        runtime: Option<&RuntimeConfig>,
        cut: bool,
    ) -> Result<FirewallSpec, Error> {
        let bridge_subnet: Ipv4Cidr = bridge.subnet.parse()?;
        let gateway: Ipv4Addr = bridge
            .gateway
            .parse()
            .map_err(|_| firewall::Error::BadCidr(bridge.gateway.clone()))?;
        let mut blocked_hosts = crate::node::ipv4_addresses(self.settings.command_timeout).await;
        blocked_hosts.extend(&self.settings.blocked_hosts);
        let egress = egress_rules(
            runtime,
            cut,
            self.settings.allow_direct_egress,
            &self.settings.dns_servers,
        )?;
        Ok(FirewallSpec {
            bridge_subnet,
            gateway,
            ingress_ports: vec![22, self.settings.vnc_port],
            blocked_hosts,
            egress,
        })
    }
}

/// How a host's namespace may leave the node, failing closed: nothing when a traffic quota cut it
/// (whatever its binding), through its tunnel when bound, straight out only when the node allows
/// unbound hosts out, else nothing.
pub(super) fn egress_rules(
    runtime: Option<&RuntimeConfig>,
    cut: bool,
    allow_direct: bool,
    dns_servers: &[Ipv4Addr],
) -> Result<Egress, Error> {
    Ok(match runtime {
        _ if cut => Egress::Deny,
        Some(runtime) => runtime.firewall_egress()?,
        None if allow_direct => Egress::Direct {
            dns_servers: dns_servers.to_vec(),
        },
        None => Egress::Deny,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound() -> RuntimeConfig {
        RuntimeConfig {
            spec: wire::EgressSpec {
                egress_ip_id: "e1".into(),
                declared_ip: "198.18.5.5".into(),
                dns_server: "10.64.0.1".into(),
                tunnel: wire::Tunnel::Wireguard(wire::WireguardSpec {
                    endpoint: "198.18.5.5:51820".into(),
                    peer_public_key: "k".into(),
                    preshared_key: None,
                    private_key: "k".into(),
                    allowed_ips: vec!["0.0.0.0/0".into()],
                    address: "10.64.0.2/32".into(),
                }),
            },
            endpoint_ip: Ipv4Addr::new(198, 18, 5, 5),
            netns_inode: Some(7),
        }
    }

    const DNS: [Ipv4Addr; 1] = [Ipv4Addr::new(198, 18, 0, 53)];

    #[test]
    fn a_cut_denies_whatever_the_binding_or_the_node_allows() {
        for runtime in [None, Some(bound())] {
            for allow_direct in [false, true] {
                let rules = egress_rules(runtime.as_ref(), true, allow_direct, &DNS).unwrap();
                assert!(matches!(rules, Egress::Deny), "{runtime:?} {allow_direct}");
            }
        }
    }

    #[test]
    fn a_bound_host_leaves_only_through_its_tunnel() {
        for allow_direct in [false, true] {
            let rules = egress_rules(Some(&bound()), false, allow_direct, &DNS).unwrap();
            assert_eq!(rules, bound().firewall_egress().unwrap());
            assert!(!matches!(rules, Egress::Direct { .. } | Egress::Deny));
        }
    }

    #[test]
    fn an_unbound_host_goes_direct_only_where_the_node_allows_it() {
        assert!(matches!(
            egress_rules(None, false, true, &DNS).unwrap(),
            Egress::Direct { dns_servers } if dns_servers == DNS
        ));
        assert!(matches!(
            egress_rules(None, false, false, &DNS).unwrap(),
            Egress::Deny
        ));
    }

    #[test]
    fn a_binding_that_cannot_be_turned_into_rules_is_an_error_not_a_way_out() {
        let mut broken = bound();
        broken.spec.dns_server = "resolver.test".into();
        assert!(egress_rules(Some(&broken), false, true, &DNS).is_err());
    }
}
