//! [`FakeInternet`]: network namespaces in 198.18.0.0/15 standing in for the internet, built by a
//! test and torn down when it is dropped.
//!
//! ```text
//!  node (root ns) ccpf<pid> 198.18.0.1/30 ── node 198.18.0.2/30 router (ns) ── lan 198.18.1.1/24
//!    route 198.18.0.0/15 via 198.18.0.2      SNAT node → 198.18.0.10          │ (bridge)
//!                                            leak counters, drop switches     ├─ wireguard 198.18.1.10
//!                                                                             ├─ socks … trojan .11–.16
//!                                                                             └─ probe 198.18.1.53
//! ```
//!
//! Each proxy server namespace runs a sing-box server whose direct outbound relays from the
//! server's own address, so the probe sees the declared egress IP as the exit. The shadowsocks
//! server's method is `2022-blake3-aes-128-gcm` unless `CCP_FAKENET_SS_METHOD` names another. The WireGuard
//! server has a userspace tun, `ccpf<pid>wg`; its namespace forwards what leaves the tunnel and
//! masquerades it to the server's address, to the same effect. Which program serves it is a
//! [`WgServerProgram`]:
//! - Debian's wireguard-go (configured with `wg setconf`, and `wg addconf` for each peer added
//!   later), the default: an implementation independent of the agent's boringtun, so that the e2e
//!   suites check that the two interoperate rather than that boringtun agrees with itself;
//! - `cloud-cli-proxy-fake-wg`, the agent's own batched data path as a responder (tun offloads,
//!   UDP GSO, `recvmmsg`), for the benchmark: wireguard-go 0.0.20220316 has no GSO or GRO and spent
//!   6-10 CPU-s per GiB against the client's 2.5-3.6, so on a small machine it, not the client, set
//!   the speed. It takes peers while it runs, as wireguard-go does, so every helper here works
//!   with either; `CCP_FAKENET_WG=wireguard-go|batched` picks one for any test or benchmark.
//!
//! Both are there rather than sing-box's WireGuard endpoint so that the server is not what limits
//! a benchmark of the client (sing-box spent a core at ~30 MiB/s). The probe namespace runs the
//! project's `cloud-cli-proxy-probe` (HTTP on :80, DNS on :53 UDP only: the probe serves no DNS
//! over TCP). Nothing routes out of 198.18.0.0/15: the servers' and the router's only routes are
//! their own subnets, and the node routes nothing but 198.18.0.0/15 to the router.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

use super::leaks::{self, LeakCount};
use super::netns::{self, PREFIX, ip, run, run_in, wait_for};
use super::servers::{Kind, Server, TROJAN_SERVER_NAME, WgServer};
use super::{RANGE, ensure_free};

/// The node's address on its link to the router.
pub const NODE_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The router's address on the link to the node (the node's route points at it).
pub const ROUTER_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// What the node's traffic looks like on the fake internet (the router SNATs to it).
pub const NODE_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
/// The router's address on the servers' LAN (their default gateway).
pub const LAN_GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const PROBE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 53);
pub const PROBE_DNS_NAME: &str = "whoami.probe.test";
/// Inside the WireGuard tunnel: the server's address, and the one offered to its client. Also in
/// the range, so that even a client that puts it on a kernel interface stays within it.
pub const WG_SERVER_ADDRESS: &str = "198.19.77.1/24";
pub const WG_PEER_ADDRESS: &str = "198.19.77.2/32";
/// The router's interface towards the node.
const ROUTER_NODE_IF: &str = "node";
const READY: Duration = Duration::from_secs(10);

/// The sing-box binary: `$SING_BOX`, else `sing-box` on the PATH.
pub fn sing_box() -> String {
    std::env::var("SING_BOX").unwrap_or_else(|_| "sing-box".to_owned())
}

/// The probe binary: `$CCP_PROBE_BIN`, else `cloud-cli-proxy-probe` beside the other binaries.
pub fn probe_bin() -> PathBuf {
    std::env::var_os("CCP_PROBE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::process::bin_dir().join("cloud-cli-proxy-probe"))
}

/// The wireguard-go binary: `$WIREGUARD_GO`, else `wireguard-go` on the PATH.
pub fn wireguard_go() -> String {
    std::env::var("WIREGUARD_GO").unwrap_or_else(|_| "wireguard-go".to_owned())
}

/// The fake internet's fast WireGuard server: `$CCP_FAKE_WG_BIN`, else `cloud-cli-proxy-fake-wg`
/// beside the other binaries.
pub fn fake_wg_bin() -> PathBuf {
    std::env::var_os("CCP_FAKE_WG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::process::bin_dir().join("cloud-cli-proxy-fake-wg"))
}

/// Which program serves the fake internet's WireGuard (the module's documentation says why two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WgServerProgram {
    /// Debian's wireguard-go, configured with `wg`: independent of the agent's implementation.
    WireguardGo,
    /// `cloud-cli-proxy-fake-wg`: the agent's batched data path, as fast as the client.
    Batched,
}

impl WgServerProgram {
    /// `CCP_FAKENET_WG` (`wireguard-go` or `batched`) if set, else `default`.
    pub fn from_env_or(default: Self) -> Result<Self> {
        match std::env::var("CCP_FAKENET_WG").as_deref() {
            Err(_) | Ok("") => Ok(default),
            Ok("wireguard-go") => Ok(Self::WireguardGo),
            Ok("batched") => Ok(Self::Batched),
            Ok(other) => bail!("CCP_FAKENET_WG is `{other}`, not `wireguard-go` or `batched`"),
        }
    }
}

/// The stdin and stdout of a running `cloud-cli-proxy-fake-wg`: a line in, its answer out.
struct WgControl {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl WgControl {
    fn say(&mut self, line: &str, answer: &str) -> Result<()> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        let mut got = String::new();
        self.stdout.read_line(&mut got)?;
        if got.trim() != answer {
            bail!(
                "cloud-cli-proxy-fake-wg answered `{}`, not `{answer}`",
                got.trim()
            );
        }
        Ok(())
    }
}

/// Where wireguard-go puts the control socket of interface `name` (what `wg` talks to).
pub fn wireguard_socket(name: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/wireguard/{name}.sock"))
}

/// The masquerade of the WireGuard server's namespace: what leaves its tunnel for the LAN leaves
/// with the server's own address.
const WG_NAT: &str = "table ip fakenet_wg {
    chain post {
        type nat hook postrouting priority srcnat; policy accept;
        oifname \"eth0\" masquerade
    }
}
";

/// A fresh WireGuard key pair `(private, public)` from `sing-box generate wg-keypair`.
pub fn wg_keypair() -> Result<(String, String)> {
    let out = run(&sing_box(), &["generate", "wg-keypair"])?;
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| anyhow!("no {name} in `sing-box generate wg-keypair` output"))
    };
    Ok((field("PrivateKey:")?, field("PublicKey:")?))
}

/// A self-signed P-256 certificate for `name` made by openssl: `(name.crt, name.key)` in `dir`.
pub fn self_signed_certificate(dir: &std::path::Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName=DNS:{name}"),
            "-keyout",
            &key.to_string_lossy(),
            "-out",
            &cert.to_string_lossy(),
        ],
    )?;
    Ok((cert, key))
}

/// Held by a live fake internet: they share the range, so one at a time on a machine, across
/// processes too (the test runner may run tests of one binary in separate processes).
const LOCK_FILE: &str = "ccpf-fakenet.lock";
const LOCK_WAIT: Duration = Duration::from_secs(180);

fn lock_machine_wide() -> Result<File> {
    let path = std::env::temp_dir().join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => bail!(
                "another fake internet held {} for {LOCK_WAIT:?}: {e:?}",
                path.display()
            ),
        }
    }
}

/// The fake internet. Dropping it kills its processes and removes its namespaces and route.
pub struct FakeInternet {
    /// Released last, when everything is gone (fields drop after `Drop::drop`).
    _lock: File,
    label: String,
    /// Start of every namespace name of this instance.
    ns_prefix: String,
    dir: tempfile::TempDir,
    router: String,
    probe_ns: String,
    node_if: String,
    /// The WireGuard server's interface in its namespace (and the name of its control socket).
    wg_if: String,
    wg_program: WgServerProgram,
    /// The running `cloud-cli-proxy-fake-wg`'s stdin and stdout.
    wg_control: Option<WgControl>,
    servers: Vec<Server>,
    /// Running processes by role (`probe`, or a server kind's role).
    procs: HashMap<String, Child>,
    allowed: BTreeSet<Ipv4Addr>,
    blocked: BTreeSet<Ipv4Addr>,
}

impl std::fmt::Debug for FakeInternet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeInternet")
            .field("label", &self.label)
            .field("router", &self.router)
            .field("node_if", &self.node_if)
            .field("wg_program", &self.wg_program)
            .finish_non_exhaustive()
    }
}

impl FakeInternet {
    /// Waits until no other fake internet exists on this machine (up to 3 minutes), sweeps
    /// leftovers of crashed runs, checks that 198.18.0.0/15 is free on this machine, then
    /// builds the router, the seven servers and the probe. Needs root. The WireGuard server is
    /// wireguard-go unless `CCP_FAKENET_WG` says otherwise.
    pub fn build(label: &str) -> Result<Self> {
        Self::build_with(label, WgServerProgram::from_env_or(WgServerProgram::WireguardGo)?)
    }

    /// [`Self::build`] with the WireGuard server run by `wg_program`.
    pub fn build_with(label: &str, wg_program: WgServerProgram) -> Result<Self> {
        let lock = lock_machine_wide()?;
        let removed = netns::sweep_stale();
        if !removed.is_empty() {
            eprintln!(
                "fakenet: removed leftovers of earlier runs: {}",
                removed.join(", ")
            );
        }
        ensure_free(RANGE).map_err(|e| anyhow!("refusing to build the fake internet: {e}"))?;
        let probe = probe_bin();
        if !probe.is_file() {
            bail!(
                "{} does not exist: build it (`cargo build -p probe`) or \
                 set CCP_BIN_DIR / CCP_PROBE_BIN",
                probe.display()
            );
        }
        run(&sing_box(), &["version"]).context("sing-box is needed (set SING_BOX to its path)")?;
        let ss_method = super::servers::shadowsocks_method_from_env()?;
        match wg_program {
            WgServerProgram::WireguardGo => {
                run(&wireguard_go(), &["--version"])
                    .context("wireguard-go is needed (Debian's wireguard-go; or set WIREGUARD_GO)")?;
                run("wg", &["--version"]).context("wg is needed (Debian's wireguard-tools)")?;
            }
            WgServerProgram::Batched => {
                let bin = fake_wg_bin();
                if !bin.is_file() {
                    bail!(
                        "{} does not exist: build it (`cargo build --workspace --bins`) or set \
                         CCP_BIN_DIR / CCP_FAKE_WG_BIN",
                        bin.display()
                    );
                }
            }
        }
        let pid = std::process::id();
        let short: String = label
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect::<String>()
            .to_ascii_lowercase();
        let ns = |role: &str| format!("{PREFIX}-{pid}-{short}-{role}");
        let mut net = Self {
            _lock: lock,
            label: label.to_owned(),
            ns_prefix: ns(""),
            dir: netns::owned_tempdir("ccpf-")?,
            router: ns("rt"),
            probe_ns: ns("probe"),
            node_if: format!("{PREFIX}{pid}"),
            wg_if: format!("{PREFIX}{pid}wg"),
            wg_program,
            wg_control: None,
            servers: Vec::new(),
            procs: HashMap::new(),
            allowed: BTreeSet::new(),
            blocked: BTreeSet::new(),
        };
        // From here on, a failure drops `net`, which removes whatever was built.
        net.build_router()?;
        let (cert, _) = self_signed_certificate(net.dir.path(), TROJAN_SERVER_NAME)?;
        for kind in Kind::ALL {
            let wg = if kind == Kind::Wireguard {
                let (private_key, public_key) = wg_keypair()?;
                let (psk, _) = wg_keypair()?;
                Some(WgServer {
                    private_key,
                    public_key,
                    preshared_key: psk,
                    address: WG_SERVER_ADDRESS.to_owned(),
                    peer_address: WG_PEER_ADDRESS.to_owned(),
                    peers: Vec::new(),
                })
            } else {
                None
            };
            let mut server = Server::new(kind, ns(kind.role()), wg).with_shadowsocks_method(ss_method);
            if kind == Kind::Trojan {
                server.cert_pem = std::fs::read_to_string(&cert)?;
            }
            net.attach(&server.netns, kind.role(), server.ip)?;
            if kind == Kind::Wireguard {
                run_in(&server.netns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
                let rules = net.dir.path().join("wg-nat.nft");
                std::fs::write(&rules, WG_NAT)?;
                run_in(&server.netns, "nft", &["-f", &rules.to_string_lossy()])?;
            }
            net.servers.push(server);
            net.start_server(kind)?;
        }
        net.attach(&net.probe_ns.clone(), "probe", PROBE_IP)?;
        net.start_probe(&probe)?;
        net.reset_leaks()?;
        Ok(net)
    }

    fn build_router(&mut self) -> Result<()> {
        let rt = self.router.as_str();
        ip(&["netns", "add", rt])?;
        ip(&["-n", rt, "link", "set", "dev", "lo", "up"])?;
        run_in(rt, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        ip(&[
            "link",
            "add",
            &self.node_if,
            "type",
            "veth",
            "peer",
            "name",
            ROUTER_NODE_IF,
            "netns",
            rt,
        ])?;
        ip(&["addr", "add", &format!("{NODE_SIDE}/30"), "dev", &self.node_if])?;
        ip(&["link", "set", &self.node_if, "up"])?;
        ip(&[
            "-n",
            rt,
            "addr",
            "add",
            &format!("{ROUTER_SIDE}/30"),
            "dev",
            ROUTER_NODE_IF,
        ])?;
        ip(&["-n", rt, "link", "set", "dev", ROUTER_NODE_IF, "up"])?;
        ip(&["-n", rt, "link", "add", "lan", "type", "bridge"])?;
        ip(&[
            "-n",
            rt,
            "addr",
            "add",
            &format!("{LAN_GATEWAY}/24"),
            "dev",
            "lan",
        ])?;
        ip(&["-n", rt, "link", "set", "dev", "lan", "up"])?;
        let rules = self.dir.path().join("router.nft");
        std::fs::write(&rules, leaks::ruleset(ROUTER_NODE_IF, NODE_PUBLIC))?;
        run_in(rt, "nft", &["-f", &rules.to_string_lossy()])?;
        // The one route on the node: the whole range, towards the router.
        ip(&[
            "route",
            "replace",
            &RANGE.to_string(),
            "via",
            &ROUTER_SIDE.to_string(),
            "dev",
            &self.node_if,
        ])?;
        Ok(())
    }

    /// Creates namespace `netns` with address `addr`/24 on the router's LAN.
    fn attach(&self, netns: &str, role: &str, addr: Ipv4Addr) -> Result<()> {
        let rt = self.router.as_str();
        let link = format!("s-{role}");
        ip(&["netns", "add", netns])?;
        ip(&["-n", netns, "link", "set", "dev", "lo", "up"])?;
        ip(&[
            "-n", rt, "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", netns,
        ])?;
        ip(&["-n", rt, "link", "set", &link, "master", "lan", "up"])?;
        ip(&["-n", netns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ip(&["-n", netns, "link", "set", "dev", "eth0", "up"])?;
        ip(&[
            "-n",
            netns,
            "route",
            "add",
            "default",
            "via",
            &LAN_GATEWAY.to_string(),
        ])?;
        Ok(())
    }

    /// Starts `program args` in `netns` with its output in `<role>.log`.
    fn spawn(&mut self, role: &str, netns: &str, program: &str, args: &[&str]) -> Result<()> {
        self.spawn_piped(role, netns, program, args, false).map(|_| ())
    }

    /// [`Self::spawn`]; with `piped`, its stdin and stdout are the caller's (stderr still goes to
    /// the log).
    fn spawn_piped(
        &mut self,
        role: &str,
        netns: &str,
        program: &str,
        args: &[&str],
        piped: bool,
    ) -> Result<Option<WgControl>> {
        // Appended to: a restarted server's log keeps what the one before it said.
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{role}.log")))?;
        let (stdin, stdout) = if piped {
            (Stdio::piped(), Stdio::piped())
        } else {
            (Stdio::null(), Stdio::from(log.try_clone()?))
        };
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, program])
            .args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {program} in {netns}"))?;
        let control = match (child.stdin.take(), child.stdout.take()) {
            (Some(stdin), Some(stdout)) => Some(WgControl {
                stdin,
                stdout: BufReader::new(stdout),
            }),
            _ => None,
        };
        self.procs.insert(role.to_owned(), child);
        Ok(control)
    }

    /// The log of the process with `role` (a kind's role or `probe`), for failure messages.
    pub fn log(&self, role: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{role}.log"))).unwrap_or_default()
    }

    fn start_probe(&mut self, probe: &std::path::Path) -> Result<()> {
        let ns = self.probe_ns.clone();
        let http = format!("{PROBE_IP}:80");
        let dns = format!("{PROBE_IP}:53");
        self.spawn(
            "probe",
            &ns,
            &probe.to_string_lossy(),
            &[
                "--http-listen",
                &http,
                "--dns-listen",
                &dns,
                "--dns-name",
                PROBE_DNS_NAME,
            ],
        )?;
        let ready = || netns::listening_in(&ns, 80, false) && netns::listening_in(&ns, 53, true);
        if !wait_for(READY, ready) {
            bail!("the probe did not start: {}", self.log("probe"));
        }
        Ok(())
    }

    /// Starts (again) the server of `kind`, and waits until it listens.
    pub fn start_server(&mut self, kind: Kind) -> Result<()> {
        self.stop_server(kind);
        let server = self.server(kind).clone();
        if let Some(wg) = &server.wg {
            return self.start_wireguard(&server, wg);
        }
        let file = |ext: &str| {
            let path = self.dir.path().join(format!("{TROJAN_SERVER_NAME}.{ext}"));
            path.to_string_lossy().into_owned()
        };
        let tls = (file("crt"), file("key"));
        let config = server
            .config(Some((&tls.0, &tls.1)))
            .ok_or_else(|| anyhow!("no sing-box config for the {} server", kind.name()))?;
        let path = self.dir.path().join(format!("{}.json", kind.role()));
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        let path = path.to_string_lossy().into_owned();
        run(&sing_box(), &["check", "-c", &path])
            .with_context(|| format!("sing-box rejects the {} server config", kind.name()))?;
        self.spawn(kind.role(), &server.netns, &sing_box(), &["run", "-c", &path])?;
        if !wait_for(READY, || netns::listening_in(&server.netns, server.port, false)) {
            bail!(
                "the {} server did not start: {}",
                kind.name(),
                self.log(kind.role())
            );
        }
        Ok(())
    }

    /// The WireGuard server in its namespace: its tun device, configured with every peer known so
    /// far, addressed, up, with a route to each peer's CIDR.
    fn start_wireguard(&mut self, server: &Server, wg: &WgServer) -> Result<()> {
        match self.wg_program {
            WgServerProgram::WireguardGo => self.start_wireguard_go(server, wg),
            WgServerProgram::Batched => self.start_fake_wg(server, wg),
        }
    }

    /// `cloud-cli-proxy-fake-wg`, told its key and peers over stdin.
    fn start_fake_wg(&mut self, server: &Server, wg: &WgServer) -> Result<()> {
        let role = Kind::Wireguard.role();
        let (wg_if, listen) = (self.wg_if.clone(), format!("{}:{}", server.ip, server.port));
        let bin = fake_wg_bin();
        let control = self.spawn_piped(
            role,
            &server.netns,
            &bin.to_string_lossy(),
            &["--listen", &listen, "--tun", &wg_if, "--address", &wg.address],
            true,
        )?;
        let mut control = control.ok_or_else(|| anyhow!("no pipes to cloud-cli-proxy-fake-wg"))?;
        let started = control
            .say(&format!("private-key {}", wg.private_key), "ready")
            .and_then(|()| {
                wg.peers
                    .iter()
                    .try_for_each(|(key, cidr)| control.say(&wg.peer_line(key, cidr), "ok"))
            });
        if let Err(e) = started {
            bail!("cloud-cli-proxy-fake-wg did not start: {e:#}: {}", self.log(role));
        }
        self.wg_control = Some(control);
        let ns = server.netns.as_str();
        for (_, cidr) in &wg.peers {
            ip(&["-n", ns, "route", "replace", cidr, "dev", &wg_if])?;
        }
        Ok(())
    }

    /// wireguard-go, configured with `wg setconf`.
    fn start_wireguard_go(&mut self, server: &Server, wg: &WgServer) -> Result<()> {
        let socket = wireguard_socket(&self.wg_if);
        // A control socket left by a killed instance would look like a live one.
        let _ = std::fs::remove_file(&socket);
        // Foreground: the process is ours to kill, and the interface goes with it.
        let wg_if = self.wg_if.clone();
        self.spawn(
            Kind::Wireguard.role(),
            &server.netns,
            &wireguard_go(),
            &["-f", &wg_if],
        )?;
        if !wait_for(READY, || socket.exists()) {
            bail!("wireguard-go did not start: {}", self.log(Kind::Wireguard.role()));
        }
        let conf = self.dir.path().join("wg.conf");
        std::fs::write(&conf, wg.setconf(server.port))?;
        run("wg", &["setconf", &wg_if, &conf.to_string_lossy()])?;
        let ns = server.netns.as_str();
        ip(&["-n", ns, "addr", "add", &wg.address, "dev", &wg_if])?;
        ip(&["-n", ns, "link", "set", "dev", &wg_if, "up"])?;
        for (_, cidr) in &wg.peers {
            ip(&["-n", ns, "route", "replace", cidr, "dev", &wg_if])?;
        }
        if !wait_for(READY, || netns::listening_in(ns, server.port, true)) {
            bail!(
                "the wireguard server does not listen: {}",
                self.log(Kind::Wireguard.role())
            );
        }
        Ok(())
    }

    /// Stops the server of `kind` (it stays stopped until [`Self::start_server`]).
    pub fn stop_server(&mut self, kind: Kind) {
        if kind == Kind::Wireguard {
            self.wg_control = None;
        }
        if let Some(mut child) = self.procs.remove(kind.role()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if kind == Kind::Wireguard {
            let _ = std::fs::remove_file(wireguard_socket(&self.wg_if));
        }
    }

    /// The process id of the running server of `kind` (for the benchmark's CPU accounting).
    pub fn server_pid(&self, kind: Kind) -> Option<u32> {
        self.procs.get(kind.role()).map(Child::id)
    }

    /// Lets the wireguard server accept `public_key` with tunnel address `allowed_ip` (a CIDR). A
    /// running server learns it in place (`wg addconf`; the CIDR moves to it from any peer that
    /// held it, as a restart with the new peer list would do); a stopped one is started with it.
    pub fn add_wireguard_peer(&mut self, public_key: &str, allowed_ip: &str) -> Result<()> {
        let server = self
            .servers
            .iter_mut()
            .find(|s| s.kind == Kind::Wireguard)
            .ok_or_else(|| anyhow!("no wireguard server"))?;
        let ns = server.netns.clone();
        let wg = server
            .wg
            .as_mut()
            .ok_or_else(|| anyhow!("the wireguard server has no keys"))?;
        wg.peers.retain(|(key, _)| key != public_key);
        wg.peers.push((public_key.to_owned(), allowed_ip.to_owned()));
        let section = wg.peer_section(public_key, allowed_ip);
        let line = wg.peer_line(public_key, allowed_ip);
        if !self.procs.contains_key(Kind::Wireguard.role()) {
            return self.start_server(Kind::Wireguard);
        }
        match (self.wg_program, self.wg_control.as_mut()) {
            (WgServerProgram::WireguardGo, _) => {
                let conf = self.dir.path().join("wg-peer.conf");
                std::fs::write(&conf, section)?;
                run("wg", &["addconf", &self.wg_if, &conf.to_string_lossy()])?;
            }
            (WgServerProgram::Batched, Some(control)) => control.say(&line, "ok")?,
            (WgServerProgram::Batched, None) => bail!("cloud-cli-proxy-fake-wg runs without pipes"),
        }
        ip(&["-n", &ns, "route", "replace", allowed_ip, "dev", &self.wg_if])?;
        Ok(())
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The router's namespace (where the counters and switches live).
    pub fn router_netns(&self) -> &str {
        &self.router
    }

    pub fn probe_netns(&self) -> &str {
        &self.probe_ns
    }

    /// The node's interface towards the fake internet.
    pub fn node_interface(&self) -> &str {
        &self.node_if
    }

    pub fn node_public_ip(&self) -> Ipv4Addr {
        NODE_PUBLIC
    }

    pub fn probe_ip(&self) -> Ipv4Addr {
        PROBE_IP
    }

    /// `(connectivity URL, IP URL, whoami DNS name)` of the probe, for the control plane's
    /// `EGRESS_PROBE_CONNECTIVITY_URL`, `EGRESS_PROBE_IP_URL` and `EGRESS_PROBE_DNS_NAME`.
    pub fn probe_urls(&self) -> (String, String, String) {
        (
            format!("http://{PROBE_IP}/generate_204"),
            format!("http://{PROBE_IP}/ip"),
            PROBE_DNS_NAME.to_owned(),
        )
    }

    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    pub fn server(&self, kind: Kind) -> &Server {
        self.servers
            .iter()
            .find(|s| s.kind == kind)
            .expect("build creates a server of every kind")
    }

    /// The `POST /v1/admin/egress-ips` body for the server of `kind`, resolving through the probe.
    pub fn egress_body(&self, kind: Kind, label: &str) -> Value {
        self.server(kind).egress_body(label, PROBE_IP)
    }

    fn nft(&self, args: &[&str]) -> Result<String> {
        run_in(&self.router, "nft", args)
    }

    /// Packets leaked since the last reset.
    pub fn leaks(&self) -> Result<LeakCount> {
        Ok(leaks::parse_counters(&self.nft(&["-j", "list", "counters"])?))
    }

    pub fn reset_leaks(&self) -> Result<()> {
        self.nft(&["reset", "counters", "table", "ip", leaks::TABLE])?;
        self.nft(&["reset", "counters", "table", "ip6", leaks::TABLE6])?;
        Ok(())
    }

    fn set_element(&self, set: &str, addr: Ipv4Addr, add: bool) -> Result<()> {
        let verb = if add { "add" } else { "delete" };
        let element = format!("{{ {addr} }}");
        self.nft(&[verb, "element", "ip", leaks::TABLE, set, &element])?;
        Ok(())
    }

    /// Packets from the node to `addr` are no longer leaks.
    pub fn allow_endpoint(&mut self, addr: Ipv4Addr) -> Result<()> {
        if self.allowed.insert(addr) {
            self.set_element(leaks::ALLOWED, addr, true)?;
        }
        Ok(())
    }

    pub fn disallow_endpoint(&mut self, addr: Ipv4Addr) -> Result<()> {
        if self.allowed.remove(&addr) {
            self.set_element(leaks::ALLOWED, addr, false)?;
        }
        Ok(())
    }

    /// Whether the router forwards traffic to and from the server of `kind`: this cuts the server
    /// off from the node (a tunnel endpoint gone dark); its own traffic to the probe, on the shared
    /// LAN, still flows.
    pub fn set_reachable(&mut self, kind: Kind, reachable: bool) -> Result<()> {
        let addr = kind.ip();
        if reachable && self.blocked.remove(&addr) {
            self.set_element(leaks::BLOCKED, addr, false)?;
        } else if !reachable && self.blocked.insert(addr) {
            self.set_element(leaks::BLOCKED, addr, true)?;
        }
        Ok(())
    }

    /// This instance's namespaces, including any a failed build left half made.
    fn namespaces(&self) -> Vec<String> {
        netns::our_namespaces()
            .into_iter()
            .filter(|n| n.starts_with(&self.ns_prefix))
            .collect()
    }
}

impl Drop for FakeInternet {
    fn drop(&mut self) {
        let _ = ip(&[
            "route",
            "delete",
            &RANGE.to_string(),
            "via",
            &ROUTER_SIDE.to_string(),
        ]);
        self.wg_control = None;
        for (_, mut child) in self.procs.drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(wireguard_socket(&self.wg_if));
        for ns in self.namespaces() {
            netns::delete_namespace(&ns);
        }
        // Gone with the router's end of the pair; deleted again in case the router never existed.
        let _ = ip(&["link", "delete", &self.node_if]);
    }
}
