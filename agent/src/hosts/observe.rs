//! What Docker and the tunnel runtime say about this node's hosts: their states for heartbeats,
//! running egress namespaces, and the runtime's config and status files.

use super::*;

impl Hosts {
    /// The pids of the running egress containers (their namespaces), by host id.
    pub async fn running_egress_pids(&self) -> Result<Vec<(String, i64)>, Error> {
        let filters = [
            format!("{}=true", wire::labels::MANAGED),
            format!("{}={}", wire::labels::NODE, self.settings.node_name),
            format!("{}={}", wire::labels::ROLE, Role::Egress.as_str()),
        ];
        let mut pids = Vec::new();
        for c in self.docker.list_containers(&filters).await? {
            let running = c.state.is_some_and(|s| s.to_string() == "running");
            let host_id = c
                .labels
                .as_ref()
                .and_then(|l| l.get(wire::labels::HOST_ID))
                .cloned();
            let (Some(host_id), Some(id), true) = (host_id, c.id, running) else {
                continue;
            };
            if let Some(pid) = self
                .docker
                .inspect_container(&id)
                .await?
                .as_ref()
                .and_then(container_pid)
            {
                pids.push((host_id, pid));
            }
        }
        Ok(pids)
    }

    /// The pid of a host's running egress container (its namespace), by host id.
    pub async fn egress_pid(&self, host_id: &str) -> Result<Option<i64>, Error> {
        let Some(short_id) = self.short_id_of(host_id).await? else {
            return Ok(None);
        };
        let names = self.names(&short_id);
        Ok(self
            .docker
            .inspect_container(&names.egress)
            .await?
            .filter(|c| RunState::of(c) == RunState::Running)
            .and_then(|c| container_pid(&c)))
    }

    /// The tunnel runtime's configuration as last written for the host.
    pub fn runtime_config(&self, host_id: &str) -> Result<Option<RuntimeConfig>, Error> {
        let Some(bytes) = self.store.read_egress_config(host_id)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::InvalidSpec(format!("stored egress configuration: {e}")))
    }

    /// What the tunnel runtime last reported; `None` before its first report or without a tunnel.
    pub fn tunnel_status(&self, host_id: &str) -> Option<RuntimeStatus> {
        crate::egress_runtime::read_status(&self.store.egress_dir(host_id)).ok()
    }

    pub(super) async fn require_running(&self, name: &str) -> Result<ContainerInspectResponse, Error> {
        match self.docker.inspect_container(name).await? {
            Some(c) if RunState::of(&c) == RunState::Running => Ok(c),
            _ => Err(Error::NotRunning(name.to_owned())),
        }
    }

    /// The short id of a host, from its egress or host container's name labels.
    pub(super) async fn short_id_of(&self, host_id: &str) -> Result<Option<String>, Error> {
        let filters = [
            format!("{}=true", wire::labels::MANAGED),
            format!("{}={}", wire::labels::NODE, self.settings.node_name),
            format!("{}={host_id}", wire::labels::HOST_ID),
        ];
        let prefix = format!("ccp-{}-egress-", self.settings.node_name);
        let containers = self.docker.list_containers(&filters).await?;
        Ok(containers
            .iter()
            .flat_map(|c| c.names.iter().flatten())
            .find_map(|n| n.trim_start_matches('/').strip_prefix(&prefix).map(str::to_owned)))
    }

    /// The host's IP on the hosts bridge (the egress container's, chosen by network name).
    pub(super) async fn egress_address(&self, names: &Names) -> Result<Ipv4Addr, Error> {
        let egress = self.require_running(&names.egress).await?;
        docker::address_on(&egress, &self.settings.hosts_network)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| Error::NoAddress(names.egress.clone(), self.settings.hosts_network.clone()))
    }

    /// The host as Docker shows it now.
    pub async fn observe(&self, spec: &HostSpec) -> Result<ObservedHost, Error> {
        let names = self.names(&spec.short_id);
        let host = self.docker.inspect_container(&names.host).await?;
        let egress = self.docker.inspect_container(&names.egress).await?;
        let state = host_state(host.as_ref().map(RunState::of), egress.as_ref().map(RunState::of));
        let address = egress
            .as_ref()
            .filter(|e| RunState::of(e) == RunState::Running)
            .and_then(|e| docker::address_on(e, &self.settings.hosts_network));
        Ok(ObservedHost {
            host_id: spec.host_id.clone(),
            state,
            address,
            egress: self.egress_health(&spec.host_id),
            ssh_host_key: self.store.host_key(&spec.host_id),
            traffic: self.traffic.get(&spec.host_id),
        })
    }

    /// Every host this node holds in Docker, from the labels of its containers.
    pub async fn observe_all(&self) -> Result<Vec<ObservedHost>, Error> {
        let filters = [
            format!("{}=true", wire::labels::MANAGED),
            format!("{}={}", wire::labels::NODE, self.settings.node_name),
        ];
        let containers = self.docker.list_containers(&filters).await?;
        let mut by_host: HashMap<String, Seen> = HashMap::new();
        for c in &containers {
            let labels = c.labels.clone().unwrap_or_default();
            let (Some(host_id), Some(role)) =
                (labels.get(wire::labels::HOST_ID), labels.get(wire::labels::ROLE))
            else {
                continue;
            };
            let state = RunState::from_status(&c.state.map(|s| s.to_string()).unwrap_or_default());
            let seen = by_host.entry(host_id.clone()).or_default();
            match Role::parse(role) {
                Some(Role::Host) => seen.host = Some(state),
                Some(Role::Egress) => {
                    seen.egress = Some(state);
                    if state == RunState::Running {
                        seen.address = c
                            .network_settings
                            .as_ref()
                            .and_then(|s| s.networks.as_ref())
                            .and_then(|n| n.get(&self.settings.hosts_network))
                            .and_then(|e| e.ip_address.clone())
                            .filter(|ip| !ip.is_empty());
                    }
                }
                _ => {}
            }
        }
        let mut observed: Vec<ObservedHost> = by_host
            .into_iter()
            .map(|(host_id, seen)| ObservedHost {
                egress: self.egress_health(&host_id),
                ssh_host_key: self.store.host_key(&host_id),
                traffic: self.traffic.get(&host_id),
                host_id,
                state: host_state(seen.host, seen.egress),
                address: seen.address,
            })
            .collect();
        observed.sort_by(|a, b| a.host_id.cmp(&b.host_id));
        Ok(observed)
    }
}

pub(super) fn container_pid(c: &ContainerInspectResponse) -> Option<i64> {
    c.state.as_ref().and_then(|s| s.pid).filter(|p| *p > 0)
}

/// Whether process `other` lives in the network namespace of process `pid`, read from the node's
/// /proc (the agent runs as root in the node's PID namespace). `None` when that cannot be told (a
/// process gone, no access): callers act only on a definite `Some(false)`.
pub(super) fn same_netns(pid: i64, other: Option<i64>) -> Option<bool> {
    let ns = |p: i64| std::fs::read_link(format!("/proc/{p}/ns/net")).ok();
    Some(ns(pid)? == ns(other?)?)
}
