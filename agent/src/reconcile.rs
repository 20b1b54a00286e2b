//! Keeps Docker in line with the control plane's list of hosts on this node. [`plan`] decides from
//! what is desired and what is observed, without I/O; [`run_once`] observes, plans and acts.
//!
//! - Anything labelled as ours, on this node, whose host is no longer desired is removed: containers
//!   (host before egress), then the home volume, then the host's files.
//! - A desired host that no task is working on gets its firewall re-asserted whenever its egress
//!   container runs (Docker restarts re-create interfaces and namespaces), and is brought back up
//!   (egress, firewall, then host) if it should run but does not: that is the host's restart policy,
//!   carried out so the rules are always in before the tenant's processes.
//! - The node's hosts network is removed once the node has no host left.
//! - Objects without our `managed` label, or of another node, are never touched.

use std::collections::{HashMap, HashSet};

use wire::DesiredHost;

use crate::docker::Role;
use crate::hosts::{Hosts, RunState};

/// What kind of object an observation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Container,
    Volume,
    Network,
    /// The host's directory under the agent's state directory.
    Files,
}

/// One object as seen on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub kind: Kind,
    /// Container, volume or network name; the host id for files.
    pub name: String,
    pub managed: bool,
    pub node: Option<String>,
    pub host_id: Option<String>,
    pub role: Option<Role>,
    /// Containers only.
    pub state: Option<RunState>,
    /// Files only: the host was stopped on purpose.
    pub stopped: bool,
}

impl Observed {
    /// Reads our labels off a Docker object.
    pub fn from_labels(kind: Kind, name: &str, labels: Option<&HashMap<String, String>>) -> Self {
        let get = |k: &str| labels.and_then(|l| l.get(k)).cloned();
        Self {
            kind,
            name: name.trim_start_matches('/').to_owned(),
            managed: get(wire::labels::MANAGED).as_deref() == Some("true"),
            node: get(wire::labels::NODE),
            host_id: get(wire::labels::HOST_ID),
            role: get(wire::labels::ROLE).as_deref().and_then(Role::parse),
            state: None,
            stopped: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    RemoveContainer {
        name: String,
    },
    RemoveVolume {
        name: String,
    },
    RemoveFiles {
        host_id: String,
    },
    /// The node's hosts network, once no host is left on the node at all.
    RemoveNetwork {
        name: String,
    },
    /// Re-assert the firewall; with `start`, also start the egress and then the host container.
    Repair {
        host_id: String,
        start: bool,
    },
}

/// Decides what to do. `desired` lists every host the control plane has on this node (a host with
/// work queued or running, here or there, is `busy` and left alone).
pub fn plan(desired: &[DesiredHost], observed: &[Observed], node: &str) -> Vec<Action> {
    let wanted: HashMap<&str, bool> = desired.iter().map(|d| (d.host_id.as_str(), d.busy)).collect();
    let ours = observed
        .iter()
        .filter(|o| o.managed && o.node.as_deref() == Some(node));

    // (order, key, action): host containers before egress containers (they live in their namespace),
    // then volumes, files, and repairs last.
    let mut actions: Vec<(u8, String, Action)> = Vec::new();
    // Per desired, idle host: (egress state, host container state, stopped on purpose).
    let mut idle: HashMap<&str, (Option<RunState>, Option<RunState>, bool)> = HashMap::new();
    for o in ours {
        // The shared network carries no host id: handled below.
        let Some(host_id) = o.host_id.as_deref() else {
            continue;
        };
        match wanted.get(host_id) {
            None => actions.push(match (o.kind, o.role) {
                (Kind::Container, Some(Role::Host)) => (
                    0,
                    o.name.clone(),
                    Action::RemoveContainer { name: o.name.clone() },
                ),
                (Kind::Container, _) => (
                    1,
                    o.name.clone(),
                    Action::RemoveContainer { name: o.name.clone() },
                ),
                (Kind::Volume, _) => (2, o.name.clone(), Action::RemoveVolume { name: o.name.clone() }),
                (Kind::Files, _) => (
                    3,
                    o.name.clone(),
                    Action::RemoveFiles {
                        host_id: host_id.to_owned(),
                    },
                ),
                (Kind::Network, _) => continue,
            }),
            Some(true) => {}
            Some(false) => {
                let entry = idle.entry(host_id).or_default();
                match (o.kind, o.role) {
                    (Kind::Container, Some(Role::Egress)) => entry.0 = o.state,
                    (Kind::Container, Some(Role::Host)) => entry.1 = o.state,
                    (Kind::Files, _) => entry.2 = o.stopped,
                    _ => {}
                }
            }
        }
    }
    for (host_id, (egress, host, stopped)) in idle {
        let Some(egress) = egress else { continue }; // half-built: the control plane sees Broken
        let should_run = !stopped && host.is_some();
        let down = egress != RunState::Running || host != Some(RunState::Running);
        if should_run && down {
            actions.push((
                4,
                host_id.to_owned(),
                Action::Repair {
                    host_id: host_id.to_owned(),
                    start: true,
                },
            ));
        } else if egress == RunState::Running {
            actions.push((
                4,
                host_id.to_owned(),
                Action::Repair {
                    host_id: host_id.to_owned(),
                    start: false,
                },
            ));
        }
    }
    // The shared network goes last, and only once the node has no host at all: everything else of
    // ours is removed above, before it. An egress test namespace is attached to it too (kept warm
    // for a while after a test): the network goes on a pass after the last one is gone.
    let testing = observed.iter().any(|o| {
        o.managed
            && o.node.as_deref() == Some(node)
            && o.kind == Kind::Container
            && o.role == Some(Role::EgressTest)
    });
    if desired.is_empty() && !testing {
        let networks = observed.iter().filter(|o| {
            o.managed
                && o.node.as_deref() == Some(node)
                && o.kind == Kind::Network
                && o.role == Some(Role::Network)
        });
        for n in networks {
            actions.push((5, n.name.clone(), Action::RemoveNetwork { name: n.name.clone() }));
        }
    }
    actions.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    actions.into_iter().map(|(_, _, action)| action).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Docker(#[from] crate::docker::Error),
    #[error(transparent)]
    Secrets(#[from] crate::secrets::Error),
}

/// Everything labelled as this node's, plus the host directories under the state directory.
pub async fn observe(hosts: &Hosts) -> Result<Vec<Observed>, Error> {
    let node = &hosts.settings().node_name;
    let filters = [
        format!("{}=true", wire::labels::MANAGED),
        format!("{}={node}", wire::labels::NODE),
    ];
    let docker = hosts.docker();
    let mut observed = Vec::new();
    for c in docker.list_containers(&filters).await? {
        let name = c
            .names
            .as_ref()
            .and_then(|n| n.first())
            .cloned()
            .unwrap_or_default();
        let mut o = Observed::from_labels(Kind::Container, &name, c.labels.as_ref());
        o.state = Some(RunState::from_status(
            &c.state.map(|s| s.to_string()).unwrap_or_default(),
        ));
        observed.push(o);
    }
    for v in docker.list_volumes(&filters).await? {
        observed.push(Observed::from_labels(Kind::Volume, &v.name, Some(&v.labels)));
    }
    for n in docker.list_networks(&filters).await? {
        observed.push(Observed::from_labels(
            Kind::Network,
            n.name.as_deref().unwrap_or(""),
            n.labels.as_ref(),
        ));
    }
    let store = hosts.store();
    for host_id in store.list()? {
        observed.push(Observed {
            kind: Kind::Files,
            stopped: store.is_stopped(&host_id),
            name: host_id.clone(),
            managed: true,
            node: Some(node.clone()),
            host_id: Some(host_id),
            role: None,
            state: None,
        });
    }
    Ok(observed)
}

/// One reconcile pass. `protected` hosts (tasks running here, or finished since the desired list was
/// fetched) count as busy whatever the control plane said. Errors of single actions are logged and
/// the pass goes on; the next pass retries them.
pub async fn run_once(
    hosts: &Hosts,
    desired: &[DesiredHost],
    protected: &HashSet<String>,
) -> Result<usize, Error> {
    let mut desired = desired.to_vec();
    desired.extend(protected.iter().map(|h| DesiredHost {
        host_id: h.clone(),
        busy: true,
        egress_cut: false,
    }));
    let observed = observe(hosts).await?;
    let actions = plan(&desired, &observed, &hosts.settings().node_name);
    let count = actions.len();
    for action in actions {
        let result = match &action {
            Action::RemoveContainer { name } => {
                tracing::info!(container = %name, "reconcile: removing orphaned container");
                hosts
                    .docker()
                    .remove_container(name)
                    .await
                    .map_err(crate::hosts::Error::from)
            }
            Action::RemoveVolume { name } => {
                tracing::info!(volume = %name, "reconcile: removing orphaned volume");
                hosts
                    .docker()
                    .remove_volume(name)
                    .await
                    .map_err(crate::hosts::Error::from)
            }
            Action::RemoveFiles { host_id } => {
                tracing::info!(host_id = %host_id, "reconcile: removing orphaned host files");
                hosts.store().remove(host_id).map_err(crate::hosts::Error::from)
            }
            Action::RemoveNetwork { name } => {
                tracing::info!(network = %name, "reconcile: removing the unused hosts network");
                hosts
                    .docker()
                    .remove_network(name)
                    .await
                    .map_err(crate::hosts::Error::from)
            }
            Action::Repair { host_id, start } => {
                if *start {
                    tracing::info!(host_id = %host_id, "reconcile: bringing the host back up");
                }
                hosts.repair(host_id, *start).await
            }
        };
        if let Err(e) = result {
            tracing::warn!(?action, error = %e, "reconcile action failed");
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "n1";

    fn labels(node: &str, role: &str, host: Option<&str>) -> HashMap<String, String> {
        let mut l = HashMap::from([
            (wire::labels::MANAGED.to_owned(), "true".to_owned()),
            (wire::labels::NODE.to_owned(), node.to_owned()),
            (wire::labels::ROLE.to_owned(), role.to_owned()),
        ]);
        if let Some(h) = host {
            l.insert(wire::labels::HOST_ID.to_owned(), h.to_owned());
        }
        l
    }

    fn container(node: &str, role: &str, host: &str, state: RunState) -> Observed {
        let name = format!("/ccp-{node}-{role}-{host}");
        let mut o = Observed::from_labels(Kind::Container, &name, Some(&labels(node, role, Some(host))));
        o.state = Some(state);
        o
    }

    fn volume(node: &str, host: &str) -> Observed {
        Observed::from_labels(
            Kind::Volume,
            &format!("ccp-{node}-home-{host}"),
            Some(&labels(node, "home", Some(host))),
        )
    }

    fn files(host: &str, stopped: bool) -> Observed {
        Observed {
            kind: Kind::Files,
            name: host.into(),
            managed: true,
            node: Some(NODE.into()),
            host_id: Some(host.into()),
            role: None,
            state: None,
            stopped,
        }
    }

    fn host(node: &str, id: &str, host_state: RunState, egress_state: RunState) -> Vec<Observed> {
        vec![
            container(node, "host", id, host_state),
            container(node, "egress", id, egress_state),
            volume(node, id),
        ]
    }

    fn desired(id: &str, busy: bool) -> DesiredHost {
        DesiredHost {
            host_id: id.into(),
            busy,
            egress_cut: false,
        }
    }

    #[test]
    fn orphans_are_removed_host_container_first_then_volume_then_files() {
        let mut observed = host(NODE, "gone", RunState::Running, RunState::Running);
        observed.push(files("gone", false));
        let actions = plan(&[], &observed, NODE);
        assert_eq!(
            actions,
            [
                Action::RemoveContainer {
                    name: "ccp-n1-host-gone".into()
                },
                Action::RemoveContainer {
                    name: "ccp-n1-egress-gone".into()
                },
                Action::RemoveVolume {
                    name: "ccp-n1-home-gone".into()
                },
                Action::RemoveFiles {
                    host_id: "gone".into()
                },
            ]
        );
    }

    #[test]
    fn the_network_goes_with_the_last_host() {
        let network = Observed::from_labels(
            Kind::Network,
            "ccp-hosts-n1",
            Some(&labels(NODE, "network", None)),
        );
        let mut observed = host(NODE, "gone", RunState::Exited, RunState::Exited);
        observed.push(network.clone());
        let actions = plan(&[], &observed, NODE);
        assert_eq!(
            actions.last(),
            Some(&Action::RemoveNetwork {
                name: "ccp-hosts-n1".into()
            })
        );
        assert_eq!(actions.len(), 4);
        // Not while any host is desired.
        let observed = vec![network.clone()];
        assert!(plan(&[desired("h1", true)], &observed, NODE).is_empty());
        // Not while an egress test namespace is attached to it (nor is that namespace touched).
        let warm = Observed::from_labels(
            Kind::Container,
            "/ccp-n1-etest-1",
            Some(&labels(NODE, "egress-test", None)),
        );
        assert!(plan(&[], &[network, warm], NODE).is_empty());
    }

    #[test]
    fn other_nodes_and_unlabelled_objects_are_never_touched() {
        let mut observed = host("n2", "theirs", RunState::Running, RunState::Running);
        let mut unmanaged = container(NODE, "host", "x", RunState::Running);
        unmanaged.managed = false;
        observed.push(unmanaged);
        observed.push(Observed::from_labels(Kind::Container, "/random", None));
        let network = Observed::from_labels(
            Kind::Network,
            "ccp-hosts-n2",
            Some(&labels("n2", "network", None)),
        );
        observed.push(network);
        assert!(plan(&[], &observed, NODE).is_empty());
    }

    #[test]
    fn busy_hosts_are_left_alone() {
        let observed = host(NODE, "h1", RunState::Exited, RunState::Running);
        assert!(plan(&[desired("h1", true)], &observed, NODE).is_empty());
    }

    #[test]
    fn running_hosts_get_their_firewall_reasserted() {
        let observed = host(NODE, "h1", RunState::Running, RunState::Running);
        assert_eq!(
            plan(&[desired("h1", false)], &observed, NODE),
            [Action::Repair {
                host_id: "h1".into(),
                start: false
            }]
        );
    }

    #[test]
    fn hosts_that_should_run_are_brought_back_after_a_restart() {
        // Docker restarted: the egress container came back (unless-stopped), the host did not.
        let observed = host(NODE, "h1", RunState::Exited, RunState::Running);
        assert_eq!(
            plan(&[desired("h1", false)], &observed, NODE),
            [Action::Repair {
                host_id: "h1".into(),
                start: true
            }]
        );
        // Both down without a stop: likewise.
        let observed = host(NODE, "h2", RunState::Exited, RunState::Exited);
        assert_eq!(
            plan(&[desired("h2", false)], &observed, NODE),
            [Action::Repair {
                host_id: "h2".into(),
                start: true
            }]
        );
    }

    #[test]
    fn hosts_stopped_on_purpose_stay_stopped() {
        let mut observed = host(NODE, "h1", RunState::Exited, RunState::Exited);
        observed.push(files("h1", true));
        assert!(plan(&[desired("h1", false)], &observed, NODE).is_empty());
        // A half-done stop (egress still up) only gets its firewall re-asserted.
        let mut observed = host(NODE, "h2", RunState::Exited, RunState::Running);
        observed.push(files("h2", true));
        assert_eq!(
            plan(&[desired("h2", false)], &observed, NODE),
            [Action::Repair {
                host_id: "h2".into(),
                start: false
            }]
        );
    }

    #[test]
    fn half_built_hosts_are_left_to_the_control_plane() {
        let observed = vec![
            volume(NODE, "h1"),
            container(NODE, "host", "h1", RunState::Exited),
        ];
        assert!(plan(&[desired("h1", false)], &observed, NODE).is_empty());
    }

    #[test]
    fn desired_hosts_keep_everything() {
        let mut observed = host(NODE, "h1", RunState::Running, RunState::Running);
        observed.push(files("h1", false));
        let actions = plan(&[desired("h1", false)], &observed, NODE);
        assert!(
            actions.iter().all(|a| matches!(a, Action::Repair { .. })),
            "{actions:?}"
        );
    }
}
