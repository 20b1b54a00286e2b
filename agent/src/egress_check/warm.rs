//! The namespaces egress tests run in, kept warm between tests. Each is an egress container built
//! like a bound host's (the tunnel runtime as its main process, NET_ADMIN and the tun device, on
//! the hosts network) with no host and, between tests, no egress: the runtime idles with no
//! configuration and the firewall is the deny ruleset (nothing leaves at all).
//!
//! A test leases one ([`Pool::acquire`]): an idle namespace whose process still owns the network
//! namespace it was made with, or a new one. [`Namespace::configure`] installs that egress's tunnel
//! ruleset, flushes conntrack, then hands the runtime its configuration; [`Pool::release`] takes
//! the configuration away, waits until the runtime says it stopped the tunnel process, puts the
//! deny ruleset back, flushes conntrack again and deletes every file the test left (the tunnel's
//! own configuration holds its keys). Only a namespace whose every reset step worked goes back to
//! the pool; anything in doubt (a step failed, the test ran out of time with work possibly still
//! inside, the runtime never took the configuration) is removed instead.
//!
//! Tests of different egresses at once each get a namespace of their own (up to [`MAX_IN_USE`];
//! more wait for one); at most [`MAX_IDLE`] stay warm, each for at most [`IDLE_LIMIT`]. The agent's
//! sweep removes every test container of the node when it starts and stops, so a namespace never
//! outlives the agent that made it (an agent that crashed leaves its namespaces to the next one's
//! sweep: they are idle and closed meanwhile).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::egress_runtime::{CONFIG_FILE, State};
use crate::hosts::tunnel::{self, RuntimeConfig};
use crate::hosts::{Hosts, Names};

/// Namespaces in use at once; further tests wait for one.
pub const MAX_IN_USE: usize = 4;
/// Namespaces kept warm after their test.
pub const MAX_IDLE: usize = 2;
/// A warm namespace unused this long is removed (the hosts network can go when its last host
/// does; a namespace attached to it would keep it).
pub const IDLE_LIMIT: Duration = Duration::from_secs(600);
/// How long the runtime may take to stop a tunnel after its configuration is taken away.
const STOP_WAIT: Duration = Duration::from_secs(3);

/// One test namespace: its owner container, the directory it shares with the agent, and the
/// process (and namespace inode) it was made with.
#[derive(Debug)]
pub struct Namespace {
    pub name: String,
    pub dir: PathBuf,
    pub pid: i64,
    inode: u64,
    idle_since: Instant,
}

/// A namespace leased to one test. `reusable` stays false until the test is known to have left
/// nothing running inside; otherwise the namespace is removed on release.
#[derive(Debug)]
pub struct Lease {
    pub ns: Namespace,
    pub reusable: bool,
    _permit: OwnedSemaphorePermit,
}

#[derive(Debug)]
pub struct Pool {
    idle: std::sync::Mutex<Vec<Namespace>>,
    slots: Arc<Semaphore>,
}

impl Pool {
    pub fn new() -> Self {
        Self {
            idle: std::sync::Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(MAX_IN_USE)),
        }
    }

    /// A namespace for one test: a warm one that is still whole, or a new one.
    pub async fn acquire(&self, hosts: &Hosts) -> Result<Lease, String> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "the agent is stopping".to_owned())?;
        while let Some(ns) = self.take_idle() {
            if ns.alive() {
                tracing::debug!(container = %ns.name, "egress test in a warm namespace");
                return Ok(Lease {
                    ns,
                    reusable: false,
                    _permit: permit,
                });
            }
            tracing::info!(container = %ns.name, "warm egress test namespace is gone; making another");
            ns.remove(hosts).await;
        }
        let ns = Namespace::create(hosts).await?;
        Ok(Lease {
            ns,
            reusable: false,
            _permit: permit,
        })
    }

    fn take_idle(&self) -> Option<Namespace> {
        self.idle.lock().ok()?.pop()
    }

    /// Resets the namespace for the next test and keeps it warm, or removes it.
    pub async fn release(&self, hosts: &Hosts, lease: Lease) {
        let Lease { mut ns, reusable, .. } = lease;
        if reusable {
            match ns.reset(hosts).await {
                Ok(()) => {
                    ns.idle_since = Instant::now();
                    let kept = match self.idle.lock() {
                        Ok(mut idle) if idle.len() < MAX_IDLE => {
                            idle.push(ns);
                            None
                        }
                        _ => Some(ns),
                    };
                    match kept {
                        None => return,
                        Some(extra) => ns = extra,
                    }
                }
                Err(e) => {
                    tracing::warn!(container = %ns.name, error = %e, "egress test namespace not reset; removing it");
                }
            }
        }
        ns.remove(hosts).await;
    }

    /// Removes warm namespaces unused for [`IDLE_LIMIT`].
    pub async fn expire(&self, hosts: &Hosts) {
        let old: Vec<Namespace> = match self.idle.lock() {
            Ok(mut idle) => {
                let (old, keep) = idle
                    .drain(..)
                    .partition(|ns| ns.idle_since.elapsed() >= IDLE_LIMIT);
                *idle = keep;
                old
            }
            Err(_) => Vec::new(),
        };
        for ns in old {
            tracing::debug!(container = %ns.name, "removing an unused warm egress test namespace");
            ns.remove(hosts).await;
        }
    }

    /// Forgets every warm namespace (the caller's sweep removes them).
    pub fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}

impl Namespace {
    fn names(&self) -> Names {
        Names {
            egress: self.name.clone(),
            host: String::new(),
            home: String::new(),
        }
    }

    /// Makes a namespace: container started, deny ruleset installed, runtime idle.
    async fn create(hosts: &Hosts) -> Result<Self, String> {
        let id = format!("{:012x}", rand::random::<u64>() >> 16);
        let name = format!("ccp-{}-etest-{id}", hosts.settings().node_name);
        let dir = hosts.store().egress_tests_dir().join(&id);
        let mut ns = Self {
            name,
            dir,
            pid: 0,
            inode: 0,
            idle_since: Instant::now(),
        };
        match ns.build(hosts).await {
            Ok(()) => {
                tracing::info!(container = %ns.name, "egress test namespace made");
                Ok(ns)
            }
            Err(e) => {
                ns.remove(hosts).await;
                Err(e)
            }
        }
    }

    async fn build(&mut self, hosts: &Hosts) -> Result<(), String> {
        crate::secrets::create_private_dir(&self.dir).map_err(|e| e.to_string())?;
        let bridge = hosts.ensure_network().await.map_err(|e| e.to_string())?;
        let body = hosts.egress_test_body(&self.dir.to_string_lossy());
        let docker = hosts.docker();
        docker
            .ensure_container(&self.name, body)
            .await
            .map_err(|e| e.to_string())?;
        docker
            .start_container(&self.name)
            .await
            .map_err(|e| e.to_string())?;
        self.pid = hosts
            .apply_firewall(&self.names(), &bridge, None, true)
            .await
            .map_err(|e| e.to_string())?;
        self.inode = tunnel::netns_inode(self.pid)
            .ok_or_else(|| format!("the namespace of {} went away", self.name))?;
        Ok(())
    }

    /// Whether the owner process still holds the namespace it was made with.
    fn alive(&self) -> bool {
        tunnel::netns_inode(self.pid) == Some(self.inode)
    }

    /// Installs `runtime`'s tunnel ruleset, clears conntrack, and hands the runtime its
    /// configuration (tied to this namespace).
    pub async fn configure(&self, hosts: &Hosts, mut runtime: RuntimeConfig) -> Result<(), String> {
        let bridge = hosts.ensure_network().await.map_err(|e| e.to_string())?;
        let pid = hosts
            .apply_firewall(&self.names(), &bridge, Some(&runtime), false)
            .await
            .map_err(|e| e.to_string())?;
        if pid != self.pid || !self.alive() {
            return Err(format!("the namespace of {} was replaced", self.name));
        }
        self.flush_conntrack().await?;
        runtime.netns_inode = Some(self.inode);
        let bytes = serde_json::to_vec(&runtime).map_err(|e| e.to_string())?;
        crate::secrets::write_private(&self.dir.join(CONFIG_FILE), &bytes).map_err(|e| e.to_string())
    }

    async fn flush_conntrack(&self) -> Result<(), String> {
        crate::netns::run_in(self.pid, || async { crate::conntrack::flush() })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Back to idle: configuration gone, tunnel process stopped (the runtime says so in a status
    /// written after the configuration went), deny ruleset, conntrack empty, files deleted.
    async fn reset(&self, hosts: &Hosts) -> Result<(), String> {
        let since = chrono::Utc::now();
        match std::fs::remove_file(self.dir.join(CONFIG_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("removing the test's configuration: {e}")),
        }
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            let stopped = crate::egress_runtime::read_status(&self.dir)
                .is_ok_and(|s| s.state == State::Idle && s.pid.is_none() && s.updated_at >= since);
            if stopped {
                break;
            }
            if Instant::now() >= deadline {
                return Err("the runtime did not stop the tunnel in time".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let bridge = hosts.ensure_network().await.map_err(|e| e.to_string())?;
        let pid = hosts
            .apply_firewall(&self.names(), &bridge, None, true)
            .await
            .map_err(|e| e.to_string())?;
        if pid != self.pid || !self.alive() {
            return Err(format!("the namespace of {} was replaced", self.name));
        }
        self.flush_conntrack().await?;
        // The runtime writes its status again only when it changes: from idle, that is on the
        // next test's configuration, so no status of this test is read by the next.
        let files = std::fs::read_dir(&self.dir).map_err(|e| e.to_string())?;
        for entry in files {
            let path = entry.map_err(|e| e.to_string())?.path();
            std::fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Removes the container and the directory (errors are logged; the next sweep retries).
    async fn remove(&self, hosts: &Hosts) {
        if let Err(e) = hosts.docker().remove_container(&self.name).await {
            tracing::warn!(container = %self.name, error = %e, "egress test container not removed; the next sweep retries");
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "egress test files not removed");
        }
    }
}
