//! What a host's two containers look like: limits, capabilities, mounts, labels, logging and
//! restart policies, and the checks a spec passes before any of it is built.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, DeviceMapping, HostConfig, HostConfigLogConfig, Mount, MountType, RestartPolicy,
    RestartPolicyNameEnum,
};
use wire::HostSpec;

use super::{Error, Names, Settings, tunnel};
use crate::docker::{Role, labels_for};

/// Capabilities the host container keeps (all others are dropped), as images/README.md lists them:
/// sshd (privilege separation, the user's session, audit records), sudo, and host-init (creating the
/// user, handing files over, stopping the desktop). Never NET_ADMIN or NET_RAW; no DAC_OVERRIDE or
/// FOWNER either, so root cannot overrule the user's file permissions. Port 22 needs no
/// NET_BIND_SERVICE: Docker sets `ip_unprivileged_port_start=0` in the egress namespace.
pub const HOST_CAPABILITIES: [&str; 6] = ["CHOWN", "SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE", "KILL"];

/// Defaults when the spec leaves a limit at 0.
pub const DEFAULT_MEMORY_MB: u64 = 2048;
pub const DEFAULT_CPU_MILLIS: u64 = 1000;
pub const DEFAULT_PIDS_LIMIT: u64 = 1024;

/// The egress container's own small limits.
const EGRESS_MEMORY_BYTES: i64 = 32 * 1024 * 1024;
const EGRESS_PIDS_LIMIT: i64 = 16;
/// With a tunnel: the runtime, and sing-box (tens of MiB, goroutine threads) or boringtun.
const TUNNEL_MEMORY_BYTES: i64 = 256 * 1024 * 1024;
const TUNNEL_PIDS_LIMIT: i64 = 128;

/// Label of the egress container telling how it was made ([`tunnel::shape`]).
pub const EGRESS_SHAPE_LABEL: &str = "io.cloud-cli-proxy.egress-shape";
/// Where the secret files are mounted in the host container (read by host-init/host-apply-secrets).
pub const SECRETS_MOUNT: &str = "/run/cloud-cli-proxy";
/// Grace period of `docker stop` for a host before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Checks the parts of a spec that end up in names, paths and the container's user.
pub fn validate_spec(spec: &HostSpec) -> Result<(), Error> {
    let id_ok = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !id_ok(&spec.host_id, 64) {
        return Err(Error::InvalidSpec(
            "host_id must be 1-64 characters from [A-Za-z0-9_-]".into(),
        ));
    }
    if !id_ok(&spec.short_id, 32) || spec.short_id.starts_with(['-', '_']) {
        return Err(Error::InvalidSpec(
            "short_id must be 1-32 characters from [A-Za-z0-9_-]".into(),
        ));
    }
    let user = &spec.linux_user;
    let user_ok = user.len() <= 32
        && user
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && user
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && user != "root";
    if !user_ok {
        return Err(Error::InvalidSpec(
            "linux_user must match [a-z_][a-z0-9_-]{0,31} and not be root".into(),
        ));
    }
    if spec.password_crypt.contains(['\n', '\r', ':']) {
        return Err(Error::InvalidSpec(
            "password_crypt must be one crypt(3) hash".into(),
        ));
    }
    if spec.authorized_keys.iter().any(|k| k.contains(['\n', '\r'])) {
        return Err(Error::InvalidSpec(
            "authorized_keys entries must be single lines".into(),
        ));
    }
    Ok(())
}

fn nonzero(value: u64, default: u64) -> u64 {
    if value == 0 { default } else { value }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Resources of a host container: memory in bytes (no swap beyond it), CPU in nano-CPUs, pids.
pub fn host_limits(spec: &HostSpec) -> (i64, i64, i64) {
    let memory = nonzero(spec.memory_mb, DEFAULT_MEMORY_MB).saturating_mul(1024 * 1024);
    let nano_cpus = nonzero(spec.cpu_millis, DEFAULT_CPU_MILLIS).saturating_mul(1_000_000);
    (
        to_i64(memory),
        to_i64(nano_cpus),
        to_i64(nonzero(spec.pids_limit, DEFAULT_PIDS_LIMIT)),
    )
}

fn log_config() -> HostConfigLogConfig {
    HostConfigLogConfig {
        typ: Some("json-file".into()),
        config: Some(HashMap::from([
            ("max-size".to_owned(), "10m".to_owned()),
            ("max-file".to_owned(), "3".to_owned()),
        ])),
    }
}

/// The egress container: owns the namespace and does nothing else.
/// The namespace owner. Unbound: `sleep` as `nobody` with nothing granted. Bound to an egress IP:
/// the tunnel runtime as root with NET_ADMIN (tun device, routes, marks) and nothing else, its
/// directory and programs bind-mounted, Docker's resolver pointed at the egress DNS server.
pub(super) fn egress_body(settings: &Settings, spec: &HostSpec, egress_dir: &str) -> ContainerCreateBody {
    let mut labels = labels_for(&settings.node_name, Role::Egress, Some(&spec.host_id));
    labels.insert(EGRESS_SHAPE_LABEL.to_owned(), tunnel::shape(spec.egress.as_ref()));
    let mut body = owner_body(settings, labels, &spec.short_id);
    if let Some(egress) = &spec.egress {
        run_tunnel(&mut body, settings, egress_dir, Some(&egress.dns_server));
    }
    body
}

fn owner_body(settings: &Settings, labels: HashMap<String, String>, hostname: &str) -> ContainerCreateBody {
    let host_config = HostConfig {
        network_mode: Some(settings.hosts_network.clone()),
        cap_drop: Some(vec!["ALL".into()]),
        privileged: Some(false),
        readonly_rootfs: Some(true),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        memory: Some(EGRESS_MEMORY_BYTES),
        memory_swap: Some(EGRESS_MEMORY_BYTES),
        pids_limit: Some(EGRESS_PIDS_LIMIT),
        log_config: Some(log_config()),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(settings.host_image.clone()),
        // The hostname lives with the namespace owner: Docker refuses one on a container that joins
        // another's network namespace.
        hostname: Some(hostname.to_ascii_lowercase()),
        entrypoint: Some(vec!["/usr/bin/tini".into(), "--".into()]),
        cmd: Some(vec!["sleep".into(), "infinity".into()]),
        user: Some("65534:65534".into()),
        labels: Some(labels),
        stop_timeout: Some(2),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Makes the namespace owner run the tunnel runtime on `egress_dir`; `dns`: the upstream of
/// Docker's resolver (a bound host's egress DNS server).
fn run_tunnel(body: &mut ContainerCreateBody, settings: &Settings, egress_dir: &str, dns: Option<&str>) {
    body.user = Some("0:0".into());
    body.cmd = Some(vec![
        tunnel::RUNTIME_IN_CONTAINER.into(),
        "run".into(),
        "--dir".into(),
        tunnel::EGRESS_MOUNT.into(),
        "--sing-box".into(),
        tunnel::SING_BOX_IN_CONTAINER.into(),
    ]);
    let host_config = body.host_config.get_or_insert_default();
    host_config.cap_add = Some(vec!["NET_ADMIN".into()]);
    host_config.memory = Some(TUNNEL_MEMORY_BYTES);
    host_config.memory_swap = Some(TUNNEL_MEMORY_BYTES);
    host_config.pids_limit = Some(TUNNEL_PIDS_LIMIT);
    host_config.devices = Some(vec![DeviceMapping {
        path_on_host: Some("/dev/net/tun".into()),
        path_in_container: Some("/dev/net/tun".into()),
        cgroup_permissions: Some("rwm".into()),
    }]);
    // No reverse-path filter: the tunnel server's answers arrive on eth0 while unmarked lookups
    // of their source go to table 2022, which until the tunnel is up (and again while it
    // restarts) holds only its unreachable route; a loose or strict check would drop the first
    // handshake answer. What may come in is the firewall's business (replies and the gateway).
    host_config.sysctls = Some(HashMap::from([
        ("net.ipv4.conf.all.rp_filter".to_owned(), "0".to_owned()),
        ("net.ipv4.conf.default.rp_filter".to_owned(), "0".to_owned()),
        ("net.ipv4.conf.eth0.rp_filter".to_owned(), "0".to_owned()),
    ]));
    host_config.dns = dns.map(|d| vec![d.to_owned()]);
    let bind = |source: &str, target: &str, read_only: bool| Mount {
        target: Some(target.to_owned()),
        source: Some(source.to_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        ..Default::default()
    };
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
    let mut mounts = vec![bind(egress_dir, tunnel::EGRESS_MOUNT, false)];
    if let Some(runtime) = path(&settings.egress_runtime) {
        mounts.push(bind(&runtime, tunnel::RUNTIME_IN_CONTAINER, true));
    }
    if let Some(sing_box) = path(&settings.sing_box) {
        mounts.push(bind(&sing_box, tunnel::SING_BOX_IN_CONTAINER, true));
    }
    host_config.mounts = Some(mounts);
}

/// The namespace owner of egress tests: the bound shape of [`egress_body`] without a host and
/// without an egress of its own (each test hands the runtime its egress; the checks ask the egress
/// DNS server directly, never Docker's resolver). Docker never brings it back: the agent makes it.
pub(super) fn egress_test_body(settings: &Settings, egress_dir: &str) -> ContainerCreateBody {
    let mut labels = labels_for(&settings.node_name, Role::EgressTest, None);
    labels.insert(EGRESS_SHAPE_LABEL.to_owned(), "egress-test/1".to_owned());
    let mut body = owner_body(settings, labels, "egress-test");
    run_tunnel(&mut body, settings, egress_dir, None);
    if let Some(hc) = body.host_config.as_mut() {
        hc.restart_policy = Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        });
    }
    body
}

/// The user's container, joined to the egress container's namespace.
pub(super) fn host_body(
    settings: &Settings,
    spec: &HostSpec,
    names: &Names,
    secrets_dir: &str,
) -> ContainerCreateBody {
    let labels = labels_for(&settings.node_name, Role::Host, Some(&spec.host_id));
    let (memory, nano_cpus, pids) = host_limits(spec);
    ContainerCreateBody {
        image: Some(settings.host_image.clone()),
        // Only non-secret values: the environment shows in `docker inspect`.
        env: Some(vec![
            format!("HOST_USER={}", spec.linux_user),
            format!("VNC_PORT={}", settings.vnc_port),
            format!("DESKTOP_IDLE_SECS={}", settings.desktop_idle_secs),
        ]),
        labels: Some(labels),
        stop_timeout: Some(i64::try_from(STOP_GRACE.as_secs()).unwrap_or(10)),
        host_config: Some(HostConfig {
            network_mode: Some(format!("container:{}", names.egress)),
            mounts: Some(vec![
                Mount {
                    target: Some("/home".into()),
                    source: Some(names.home.clone()),
                    typ: Some(MountType::VOLUME),
                    read_only: Some(false),
                    ..Default::default()
                },
                Mount {
                    target: Some(SECRETS_MOUNT.into()),
                    source: Some(secrets_dir.to_owned()),
                    typ: Some(MountType::BIND),
                    read_only: Some(true),
                    ..Default::default()
                },
            ]),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some(nano_cpus),
            pids_limit: Some(pids),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(HOST_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()),
            privileged: Some(false),
            // No `no-new-privileges`: it disables setuid, so sudo would refuse to run (see
            // images/README.md); the bounding set above is what limits root and sudo.
            log_config: Some(log_config()),
            // See the module docs: the reconciler restarts hosts, after their firewall.
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> HostSpec {
        HostSpec {
            host_id: "0b5f7c1e-host".into(),
            short_id: "ab12cd".into(),
            linux_user: "alice".into(),
            memory_mb: 512,
            cpu_millis: 1500,
            pids_limit: 256,
            password_crypt: "$6$salt$hash".into(),
            authorized_keys: vec!["ssh-ed25519 AAAA gw".into()],
            vnc_secret: "vncsecret".into(),
            egress: None,
            egress_cut: false,
        }
    }

    fn settings() -> Settings {
        Settings {
            node_name: "n1".into(),
            host_image: "img".into(),
            hosts_network: "ccp-hosts-n1".into(),
            vnc_port: 6080,
            desktop_idle_secs: 900,
            allow_direct_egress: true,
            ssh_ready_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
            blocked_hosts: vec![],
            dns_servers: vec![],
            egress_runtime: Some("/usr/lib/ccp/cloud-cli-proxy-egress".into()),
            sing_box: Some("/usr/bin/sing-box".into()),
            tunnel_ready_timeout: Duration::from_secs(1),
            node_public_ips: vec![],
        }
    }

    #[test]
    fn spec_validation_rejects_what_would_break_names_or_paths() {
        validate_spec(&spec()).unwrap();
        let bad: Vec<HostSpec> = vec![
            HostSpec {
                host_id: "../etc".into(),
                ..spec()
            },
            HostSpec {
                host_id: String::new(),
                ..spec()
            },
            HostSpec {
                short_id: "a/b".into(),
                ..spec()
            },
            HostSpec {
                short_id: "-x".into(),
                ..spec()
            },
            HostSpec {
                linux_user: "root".into(),
                ..spec()
            },
            HostSpec {
                linux_user: "Alice".into(),
                ..spec()
            },
            HostSpec {
                linux_user: "a;b".into(),
                ..spec()
            },
            HostSpec {
                password_crypt: "$6$a\nroot::0".into(),
                ..spec()
            },
            HostSpec {
                authorized_keys: vec!["ssh-ed25519 A\nssh-rsa B".into()],
                ..spec()
            },
        ];
        for s in bad {
            assert!(matches!(validate_spec(&s), Err(Error::InvalidSpec(_))), "{s:?}");
        }
    }

    #[test]
    fn limits_convert_units_and_default_zeroes() {
        assert_eq!(host_limits(&spec()), (512 * 1024 * 1024, 1_500_000_000, 256));
        let zero = HostSpec {
            memory_mb: 0,
            cpu_millis: 0,
            pids_limit: 0,
            ..spec()
        };
        assert_eq!(
            host_limits(&zero),
            (
                to_i64(DEFAULT_MEMORY_MB * 1024 * 1024),
                to_i64(DEFAULT_CPU_MILLIS * 1_000_000),
                to_i64(DEFAULT_PIDS_LIMIT)
            )
        );
    }

    #[test]
    fn host_body_drops_capabilities_and_keeps_secrets_out_of_env() {
        let s = spec();
        let names = Names::new("n1", &s.short_id);
        let body = host_body(&settings(), &s, &names, "/state/n1/hosts/x/secrets");
        let hc = body.host_config.clone().unwrap();
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
        let caps = hc.cap_add.unwrap();
        assert!(
            !caps
                .iter()
                .any(|c| c.contains("NET_ADMIN") || c.contains("NET_RAW") || c == "ALL")
        );
        assert_eq!(hc.privileged, Some(false));
        assert_eq!(hc.network_mode.as_deref(), Some("container:ccp-n1-egress-ab12cd"));
        assert!(hc.port_bindings.is_none());
        assert_eq!(hc.memory, Some(512 * 1024 * 1024));
        assert_eq!(hc.pids_limit, Some(256));
        assert_eq!(
            body.env.as_deref(),
            Some(
                &[
                    "HOST_USER=alice".to_owned(),
                    "VNC_PORT=6080".to_owned(),
                    "DESKTOP_IDLE_SECS=900".to_owned()
                ][..]
            )
        );
        let json = serde_json::to_string(&body).unwrap();
        for secret in ["$6$salt$hash", "vncsecret", "AAAA"] {
            assert!(
                !json.contains(secret),
                "{secret} leaked into the container config"
            );
        }
        assert_eq!(
            body.labels.unwrap().get(wire::labels::ROLE).map(String::as_str),
            Some("host")
        );
    }

    #[test]
    fn bound_egress_body_runs_the_tunnel_with_net_admin_only() {
        let mut bound = spec();
        bound.egress = Some(wire::EgressSpec {
            egress_ip_id: "e1".into(),
            declared_ip: "198.18.5.5".into(),
            dns_server: "10.64.0.1".into(),
            tunnel: wire::Tunnel::Proxy {
                outbound: serde_json::from_value(
                    serde_json::json!({"type": "socks", "server": "198.18.5.5", "server_port": 1080}),
                )
                .unwrap(),
            },
        });
        let body = egress_body(&settings(), &bound, "/state/e");
        let hc = body.host_config.clone().unwrap();
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(hc.cap_add, Some(vec!["NET_ADMIN".to_owned()]));
        assert_eq!(hc.privileged, Some(false));
        assert_eq!(hc.dns, Some(vec!["10.64.0.1".to_owned()]));
        assert_eq!(body.cmd.as_ref().unwrap()[0], tunnel::RUNTIME_IN_CONTAINER);
        let mounts = hc.mounts.unwrap();
        let rw: Vec<_> = mounts.iter().filter(|m| m.read_only == Some(false)).collect();
        assert_eq!(rw.len(), 1, "only the egress directory is writable");
        assert_eq!(rw[0].source.as_deref(), Some("/state/e"));
        // Nothing secret in what `docker inspect` shows.
        let shown = serde_json::to_string(&body).unwrap();
        assert!(!shown.contains("password") && body.env.is_none(), "{shown}");
        let plain = egress_body(&settings(), &spec(), "/state/e");
        assert_ne!(
            plain.labels.unwrap()[EGRESS_SHAPE_LABEL],
            body.labels.unwrap()[EGRESS_SHAPE_LABEL]
        );
    }

    #[test]
    fn egress_body_owns_the_namespace_with_nothing_granted() {
        let body = egress_body(&settings(), &spec(), "/state/e");
        let hc = body.host_config.clone().unwrap();
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
        assert!(hc.cap_add.is_none());
        assert_eq!(hc.network_mode.as_deref(), Some("ccp-hosts-n1"));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(body.hostname.as_deref(), Some("ab12cd"));
        assert_eq!(body.cmd, Some(vec!["sleep".to_owned(), "infinity".to_owned()]));
        assert_eq!(
            hc.restart_policy.and_then(|r| r.name),
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
    }

    #[test]
    fn egress_test_body_runs_the_tunnel_for_no_host_and_is_never_restarted() {
        let body = egress_test_body(&settings(), "/state/t");
        let hc = body.host_config.clone().unwrap();
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(hc.cap_add, Some(vec!["NET_ADMIN".to_owned()]));
        assert_eq!(body.cmd.as_ref().unwrap()[0], tunnel::RUNTIME_IN_CONTAINER);
        assert_eq!(hc.dns, None, "the checks ask the egress DNS server directly");
        assert_eq!(
            hc.restart_policy.and_then(|r| r.name),
            Some(RestartPolicyNameEnum::NO)
        );
        let labels = body.labels.unwrap();
        assert_eq!(labels[wire::labels::ROLE], Role::EgressTest.as_str());
        assert!(!labels.contains_key(wire::labels::HOST_ID));
    }
}
