//! Adapter over the Docker engine API (bollard): every call time-boxed, every object labelled, and
//! creation idempotent. Creating something that already exists with our labels for the same host is
//! success; a name held by anything else is an error, never adopted or removed.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, Ipam, IpamConfig, Network,
    NetworkCreateRequest, NetworkInspect, Volume, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, ListNetworksOptions, ListVolumesOptions,
    RemoveContainerOptions, RemoveVolumeOptions, StopContainerOptions,
};
use futures::StreamExt as _;
use wire::labels;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Docker is unreachable: {0}")]
    Unavailable(String),
    #[error("Docker {what} took longer than {secs} s")]
    Timeout { what: &'static str, secs: u64 },
    #[error("image {0} is missing: run images/build.sh")]
    ImageMissing(String),
    #[error("{kind} {name} exists but is not ours (labels differ); refusing to touch it")]
    NameTaken { kind: &'static str, name: String },
    #[error("Docker {what} failed ({status}): {message}")]
    Api {
        what: &'static str,
        status: u16,
        message: String,
    },
    #[error("Docker {what} failed: {message}")]
    Other { what: &'static str, message: String },
}

impl Error {
    /// Worth another attempt: the engine was slow, unreachable or busy (409 while removing, 5xx).
    pub fn retryable(&self) -> bool {
        match self {
            Error::Unavailable(_) | Error::Timeout { .. } => true,
            Error::Api { status, .. } => *status >= 500 || *status == 409,
            Error::ImageMissing(_) | Error::NameTaken { .. } | Error::Other { .. } => false,
        }
    }

    fn is_not_found(&self) -> bool {
        matches!(self, Error::Api { status: 404, .. })
    }

    fn is_conflict(&self) -> bool {
        matches!(self, Error::Api { status: 409, .. })
    }
}

fn classify(what: &'static str, e: BollardError) -> Error {
    match e {
        BollardError::DockerResponseServerError { status_code, message } => Error::Api {
            what,
            status: status_code,
            message,
        },
        BollardError::RequestTimeoutError => Error::Timeout { what, secs: 0 },
        BollardError::SocketNotFoundError(path) => Error::Unavailable(format!("no socket at {path}")),
        BollardError::HyperResponseError { err } => Error::Unavailable(err.to_string()),
        BollardError::HyperLegacyError { err } => Error::Unavailable(err.to_string()),
        BollardError::IOError { err } => Error::Unavailable(err.to_string()),
        other => Error::Other {
            what,
            message: other.to_string(),
        },
    }
}

/// What an object is to us, as its `role` label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Host,
    Egress,
    Home,
    Network,
    /// The throwaway namespace of an egress test (no host id).
    EgressTest,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Egress => "egress",
            Role::Home => "home",
            Role::Network => "network",
            Role::EgressTest => "egress-test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Role::Host,
            Role::Egress,
            Role::Home,
            Role::Network,
            Role::EgressTest,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// The labels of one of our objects.
pub fn labels_for(node: &str, role: Role, host_id: Option<&str>) -> HashMap<String, String> {
    let mut l = HashMap::from([
        (labels::MANAGED.to_owned(), "true".to_owned()),
        (labels::NODE.to_owned(), node.to_owned()),
        (labels::ROLE.to_owned(), role.as_str().to_owned()),
    ]);
    if let Some(id) = host_id {
        l.insert(labels::HOST_ID.to_owned(), id.to_owned());
    }
    l
}

/// Whether `actual` carries every label of `wanted` with the same value.
pub fn labels_match(actual: Option<&HashMap<String, String>>, wanted: &HashMap<String, String>) -> bool {
    actual.is_some_and(|a| wanted.iter().all(|(k, v)| a.get(k) == Some(v)))
}

/// The hosts bridge as the firewall needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeInfo {
    pub subnet: String,
    pub gateway: String,
}

/// Output of a command run in a container.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub exit_code: i64,
    /// stdout and stderr together, at most [`EXEC_OUTPUT_MAX`] bytes of them.
    pub output: String,
    /// The command wrote more than [`EXEC_OUTPUT_MAX`] bytes: the rest was not read.
    pub truncated: bool,
}

/// Output of a command in a tenant's container kept by [`Docker::exec`]. The tenant controls what
/// runs there, so the agent keeps no more than a failure message needs, whatever it writes.
pub const EXEC_OUTPUT_MAX: usize = 64 << 10;

/// Appends what of `chunk` fits in `max` bytes to `kept`; `false` once anything had to be left out.
fn keep_output(kept: &mut Vec<u8>, chunk: &[u8], max: usize) -> bool {
    let room = max.saturating_sub(kept.len());
    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    chunk.len() <= room
}

/// A connection to the local Docker engine.
#[derive(Clone)]
pub struct Docker {
    inner: bollard::Docker,
    timeout: Duration,
    /// Serialises network creation: older engines (API < 1.44) happily create two networks with
    /// one name when two creates race, after which every lookup by that name is ambiguous.
    network_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Docker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Docker")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Docker {
    /// Connects to the engine's socket and settles on an API version both sides speak (Debian's
    /// engine may be older than bollard's default version).
    pub async fn connect(socket: &str, timeout: Duration) -> Result<Self, Error> {
        let secs = timeout.as_secs().max(1);
        let inner = bollard::Docker::connect_with_socket(socket, secs, bollard::API_DEFAULT_VERSION)
            .map_err(|e| classify("connect", e))?;
        let inner = tokio::time::timeout(timeout, inner.negotiate_version())
            .await
            .map_err(|_| Error::Timeout {
                what: "version negotiation",
                secs,
            })?
            .map_err(|e| classify("version negotiation", e))?;
        Ok(Self {
            inner,
            timeout,
            network_lock: std::sync::Arc::default(),
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn timed<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = Result<T, BollardError>>,
    ) -> Result<T, Error> {
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(match classify(what, e) {
                Error::Timeout { what, .. } => Error::Timeout {
                    what,
                    secs: self.timeout.as_secs(),
                },
                other => other,
            }),
            Err(_) => Err(Error::Timeout {
                what,
                secs: self.timeout.as_secs(),
            }),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Error::Timeout { .. }) => "timeout",
            Err(_) => "error",
        };
        crate::metrics::get().docker_call(what, outcome, started.elapsed());
        result
    }

    pub async fn ping(&self) -> Result<(), Error> {
        self.timed("ping", self.inner.ping()).await.map(drop)
    }

    /// Fails with [`Error::ImageMissing`] unless the image is present locally (images are never
    /// pulled: no registry is reachable, and a pull could hang).
    pub async fn require_image(&self, image: &str) -> Result<(), Error> {
        match self.timed("image inspect", self.inner.inspect_image(image)).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Err(Error::ImageMissing(image.to_owned())),
            Err(e) => Err(e),
        }
    }

    // --- networks ---------------------------------------------------------------------------------

    /// Creates the bridge network if missing (inter-container traffic off), on `at` when given
    /// (else where Docker's address pools say), and returns its subnet and gateway.
    pub async fn ensure_network(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
        at: Option<&BridgeInfo>,
    ) -> Result<BridgeInfo, Error> {
        let _creating = self.network_lock.lock().await;
        if let Some(existing) = self.inspect_network(name).await? {
            return checked_network(name, existing, labels);
        }
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            internal: Some(false),
            attachable: Some(false),
            enable_ipv6: Some(false),
            options: Some(HashMap::from([
                // No traffic between containers on the bridge; the namespace firewall drops it too.
                (
                    "com.docker.network.bridge.enable_icc".to_owned(),
                    "false".to_owned(),
                ),
            ])),
            labels: Some(labels.clone()),
            // With a subnet of its own, Docker reports the gateway only when it was given one too.
            ipam: at.map(|bridge| Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(bridge.subnet.clone()),
                    gateway: Some(bridge.gateway.clone()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        match self
            .timed("network create", self.inner.create_network(request))
            .await
        {
            Ok(_) => {}
            // Created concurrently by another task of ours: inspected below.
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e),
        }
        match self.inspect_network(name).await? {
            Some(created) => checked_network(name, created, labels),
            None => Err(Error::Other {
                what: "network create",
                message: format!("{name} vanished"),
            }),
        }
    }

    pub async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInspect>, Error> {
        not_found_is_none(
            self.timed("network inspect", self.inner.inspect_network(name, None))
                .await,
        )
    }

    pub async fn remove_network(&self, name: &str) -> Result<(), Error> {
        not_found_is_ok(
            self.timed("network remove", self.inner.remove_network(name))
                .await,
        )
    }

    pub async fn list_networks(&self, label_filters: &[String]) -> Result<Vec<Network>, Error> {
        let options = ListNetworksOptions {
            filters: Some(filters(label_filters)),
        };
        self.timed("network list", self.inner.list_networks(Some(options)))
            .await
    }

    // --- volumes ----------------------------------------------------------------------------------

    pub async fn ensure_volume(&self, name: &str, labels: &HashMap<String, String>) -> Result<(), Error> {
        if let Some(existing) = self.inspect_volume(name).await? {
            return if labels_match(Some(&existing.labels), labels) {
                Ok(())
            } else {
                Err(Error::NameTaken {
                    kind: "volume",
                    name: name.to_owned(),
                })
            };
        }
        let request = VolumeCreateRequest {
            name: Some(name.to_owned()),
            driver: Some("local".into()),
            labels: Some(labels.clone()),
            ..Default::default()
        };
        // Creating an existing local volume is a no-op in Docker, so re-check the labels after.
        self.timed("volume create", self.inner.create_volume(request))
            .await?;
        match self.inspect_volume(name).await? {
            Some(v) if labels_match(Some(&v.labels), labels) => Ok(()),
            _ => Err(Error::NameTaken {
                kind: "volume",
                name: name.to_owned(),
            }),
        }
    }

    pub async fn inspect_volume(&self, name: &str) -> Result<Option<Volume>, Error> {
        not_found_is_none(
            self.timed("volume inspect", self.inner.inspect_volume(name))
                .await,
        )
    }

    pub async fn remove_volume(&self, name: &str) -> Result<(), Error> {
        let options = RemoveVolumeOptions { force: false };
        not_found_is_ok(
            self.timed("volume remove", self.inner.remove_volume(name, Some(options)))
                .await,
        )
    }

    pub async fn list_volumes(&self, label_filters: &[String]) -> Result<Vec<Volume>, Error> {
        let options = ListVolumesOptions {
            filters: Some(filters(label_filters)),
        };
        let listed = self
            .timed("volume list", self.inner.list_volumes(Some(options)))
            .await?;
        Ok(listed.volumes.unwrap_or_default())
    }

    // --- containers -------------------------------------------------------------------------------

    /// Creates the container unless one with this name and our labels exists already.
    pub async fn ensure_container(&self, name: &str, body: ContainerCreateBody) -> Result<(), Error> {
        let wanted = body.labels.clone().unwrap_or_default();
        let image = body.image.clone().unwrap_or_default();
        if let Some(existing) = self.inspect_container(name).await? {
            return checked_container(name, &existing, &wanted);
        }
        let options = CreateContainerOptions {
            name: Some(name.to_owned()),
            platform: String::new(),
        };
        match self
            .timed(
                "container create",
                self.inner.create_container(Some(options), body),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => match self.inspect_container(name).await? {
                Some(existing) => checked_container(name, &existing, &wanted),
                None => Err(e),
            },
            Err(Error::Api {
                status: 404, message, ..
            }) if message.contains("image") => Err(Error::ImageMissing(image)),
            Err(e) => Err(e),
        }
    }

    pub async fn inspect_container(&self, name: &str) -> Result<Option<ContainerInspectResponse>, Error> {
        not_found_is_none(
            self.timed("container inspect", self.inner.inspect_container(name, None))
                .await,
        )
    }

    /// Starts the container; already running is fine.
    pub async fn start_container(&self, name: &str) -> Result<(), Error> {
        self.timed("container start", self.inner.start_container(name, None))
            .await
    }

    /// Stops the container with `grace` before SIGKILL; already stopped or missing is fine.
    pub async fn stop_container(&self, name: &str, grace: Duration) -> Result<(), Error> {
        let grace_secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptions {
            signal: None,
            t: Some(grace_secs),
        };
        not_found_is_ok(
            self.timed("container stop", self.inner.stop_container(name, Some(options)))
                .await,
        )
    }

    /// Removes the container (killing it if running) but not its named volumes; missing is fine.
    pub async fn remove_container(&self, name: &str) -> Result<(), Error> {
        let options = RemoveContainerOptions {
            v: true,
            force: true,
            link: false,
        };
        not_found_is_ok(
            self.timed(
                "container remove",
                self.inner.remove_container(name, Some(options)),
            )
            .await,
        )
    }

    /// Every container (running or not) carrying all of `label_filters` (`key=value`).
    pub async fn list_containers(&self, label_filters: &[String]) -> Result<Vec<ContainerSummary>, Error> {
        let options = ListContainersOptions {
            all: true,
            limit: None,
            size: false,
            filters: Some(filters(label_filters)),
        };
        self.timed("container list", self.inner.list_containers(Some(options)))
            .await
    }

    /// Runs `cmd` in a running container as root and collects its output (bounded by the timeout).
    pub async fn exec(&self, container: &str, cmd: &[&str]) -> Result<ExecOutput, Error> {
        let config = CreateExecOptions::<String> {
            cmd: Some(cmd.iter().map(|s| (*s).to_owned()).collect()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let created = self
            .timed("exec create", self.inner.create_exec(container, config))
            .await?;
        let run = async {
            let mut kept = Vec::new();
            let mut truncated = false;
            if let StartExecResults::Attached {
                output: mut stream, ..
            } = self.inner.start_exec(&created.id, None).await?
            {
                while let Some(chunk) = stream.next().await {
                    if !keep_output(&mut kept, &chunk?.into_bytes(), EXEC_OUTPUT_MAX) {
                        // The rest is not read: the command may go on in the tenant's container
                        // (inside its limits), but nothing of it reaches the agent.
                        truncated = true;
                        break;
                    }
                }
            }
            let inspected = self.inner.inspect_exec(&created.id).await?;
            Ok(ExecOutput {
                exit_code: inspected.exit_code.unwrap_or(-1),
                output: String::from_utf8_lossy(&kept).into_owned(),
                truncated,
            })
        };
        self.timed("exec", run).await
    }
}

fn filters(label_filters: &[String]) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), label_filters.to_vec())])
}

fn not_found_is_none<T>(r: Result<T, Error>) -> Result<Option<T>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn not_found_is_ok(r: Result<(), Error>) -> Result<(), Error> {
    not_found_is_none(r).map(drop)
}

fn checked_container(
    name: &str,
    existing: &ContainerInspectResponse,
    wanted: &HashMap<String, String>,
) -> Result<(), Error> {
    let actual = existing.config.as_ref().and_then(|c| c.labels.as_ref());
    if labels_match(actual, wanted) {
        Ok(())
    } else {
        Err(Error::NameTaken {
            kind: "container",
            name: name.to_owned(),
        })
    }
}

fn checked_network(
    name: &str,
    network: NetworkInspect,
    labels: &HashMap<String, String>,
) -> Result<BridgeInfo, Error> {
    if !labels_match(network.labels.as_ref(), labels) {
        return Err(Error::NameTaken {
            kind: "network",
            name: name.to_owned(),
        });
    }
    network
        .ipam
        .and_then(|ipam| ipam.config)
        .unwrap_or_default()
        .into_iter()
        .find_map(|c| match (c.subnet, c.gateway) {
            // The IPv4 entry; the network has no IPv6.
            (Some(subnet), Some(gateway)) if !subnet.contains(':') => Some(BridgeInfo { subnet, gateway }),
            _ => None,
        })
        .ok_or_else(|| Error::Other {
            what: "network inspect",
            message: format!("{name} has no IPv4 subnet and gateway"),
        })
}

/// The container's IPv4 address on `network`, chosen by network name (never by position).
pub fn address_on(container: &ContainerInspectResponse, network: &str) -> Option<String> {
    container
        .network_settings
        .as_ref()
        .and_then(|s| s.networks.as_ref())
        .and_then(|n| n.get(network))
        .and_then(|e| e.ip_address.clone())
        .filter(|ip| !ip.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_carry_node_role_and_host() {
        let l = labels_for("n1", Role::Egress, Some("h1"));
        assert_eq!(l.get(labels::MANAGED).map(String::as_str), Some("true"));
        assert_eq!(l.get(labels::NODE).map(String::as_str), Some("n1"));
        assert_eq!(l.get(labels::ROLE).map(String::as_str), Some("egress"));
        assert_eq!(l.get(labels::HOST_ID).map(String::as_str), Some("h1"));
        assert!(!labels_for("n1", Role::Network, None).contains_key(labels::HOST_ID));
        assert_eq!(Role::parse("home"), Some(Role::Home));
        assert_eq!(Role::parse("other"), None);
    }

    #[test]
    fn labels_match_needs_every_wanted_label() {
        let wanted = labels_for("n1", Role::Host, Some("h1"));
        let mut actual = wanted.clone();
        actual.insert("other".into(), "x".into());
        assert!(labels_match(Some(&actual), &wanted));
        actual.insert(labels::NODE.into(), "n2".into());
        assert!(!labels_match(Some(&actual), &wanted));
        assert!(!labels_match(None, &wanted));
    }

    #[test]
    fn retryable_errors() {
        assert!(Error::Timeout { what: "x", secs: 1 }.retryable());
        assert!(Error::Unavailable("x".into()).retryable());
        assert!(!Error::ImageMissing("i".into()).retryable());
        assert!(
            !Error::NameTaken {
                kind: "volume",
                name: "v".into()
            }
            .retryable()
        );
        assert!(
            Error::Api {
                what: "x",
                status: 500,
                message: String::new()
            }
            .retryable()
        );
        assert!(
            !Error::Api {
                what: "x",
                status: 400,
                message: String::new()
            }
            .retryable()
        );
        assert_eq!(
            Error::ImageMissing("cloud-cli-proxy/host:latest".into()).to_string(),
            "image cloud-cli-proxy/host:latest is missing: run images/build.sh"
        );
    }

    #[test]
    fn exec_output_is_kept_up_to_the_cap() {
        // Each row: chunk sizes in order, the cap, bytes kept, whether all fitted.
        let rows: &[(&[usize], usize, usize, bool)] = &[
            (&[], 8, 0, true),
            (&[3, 5], 8, 8, true),
            (&[3, 6], 8, 8, false),
            (&[9], 8, 8, false),
            (&[8, 0], 8, 8, true),
            (&[8, 1], 8, 8, false),
        ];
        for (chunks, max, want_kept, want_fits) in rows {
            let mut kept = Vec::new();
            let mut fits = true;
            for size in *chunks {
                if !keep_output(&mut kept, &vec![b'y'; *size], *max) {
                    fits = false;
                    break;
                }
            }
            assert_eq!(
                (kept.len(), fits),
                (*want_kept, *want_fits),
                "{chunks:?} in {max}"
            );
        }
    }
}
