//! The host actions (create, start, stop, rebuild, delete, secrets) and the steps they share:
//! bringing a host up behind its firewall, the tunnel runtime's config, the wait for sshd, and the
//! reconciler's repair.

use super::*;

impl Hosts {
    /// Carries out one task; returns when the host is in the task's end state.
    pub async fn execute<P: Progress>(
        &self,
        kind: TaskKind,
        spec: &HostSpec,
        wipe: bool,
        progress: &mut P,
    ) -> Result<(), Error> {
        validate_spec(spec)?;
        match kind {
            TaskKind::Create => self.create(spec, progress).await,
            TaskKind::Start => self.start(spec, progress).await,
            TaskKind::Stop => self.stop(spec, progress).await,
            TaskKind::Rebuild => self.rebuild(spec, wipe, progress).await,
            TaskKind::Delete => self.delete(spec, progress).await,
            TaskKind::RotateSshPassword => self.apply_secrets(spec, progress, "password rotated").await,
            TaskKind::ApplySecrets => self.apply_secrets(spec, progress, "secrets applied").await,
        }
    }

    /// Builds every missing piece and brings the host up; done when its sshd answers.
    pub async fn create<P: Progress>(&self, spec: &HostSpec, progress: &mut P) -> Result<(), Error> {
        self.bring_up(spec, progress, "creating").await
    }

    /// Starts a stopped host (re-creating anything missing, as create does).
    pub async fn start<P: Progress>(&self, spec: &HostSpec, progress: &mut P) -> Result<(), Error> {
        self.bring_up(spec, progress, "starting").await
    }

    /// Stops the host, then its egress container.
    pub async fn stop<P: Progress>(&self, spec: &HostSpec, progress: &mut P) -> Result<(), Error> {
        let names = self.names(&spec.short_id);
        step(progress, 5, "stopping").await?;
        // First, so the reconciler does not bring the host back up meanwhile.
        self.store.set_stopped(&spec.host_id, true)?;
        self.set_egress_health(&spec.host_id, None);
        step(progress, 10, "stopping the host container").await?;
        self.docker.stop_container(&names.host, STOP_GRACE).await?;
        step(progress, 60, "stopping the egress container").await?;
        self.docker.stop_container(&names.egress, STOP_GRACE).await?;
        step(progress, 100, "stopped").await
    }

    /// Recreates both containers from the image, keeping the home volume unless `wipe`.
    pub async fn rebuild<P: Progress>(
        &self,
        spec: &HostSpec,
        wipe: bool,
        progress: &mut P,
    ) -> Result<(), Error> {
        let names = self.names(&spec.short_id);
        step(progress, 2, "rebuilding: checking the image").await?;
        self.docker.require_image(&self.settings.host_image).await?;
        step(progress, 5, "removing the host container").await?;
        self.docker.remove_container(&names.host).await?;
        step(progress, 10, "removing the egress container").await?;
        self.docker.remove_container(&names.egress).await?;
        if wipe {
            step(progress, 15, "wiping the home volume").await?;
            self.docker.remove_volume(&names.home).await?;
        }
        self.bring_up(spec, progress, "rebuilding").await
    }

    /// Removes everything the host had on this node: containers, home volume, files.
    pub async fn delete<P: Progress>(&self, spec: &HostSpec, progress: &mut P) -> Result<(), Error> {
        let names = self.names(&spec.short_id);
        step(progress, 5, "removing the host container").await?;
        self.docker.remove_container(&names.host).await?;
        step(progress, 30, "removing the egress container").await?;
        self.docker.remove_container(&names.egress).await?;
        step(progress, 55, "removing the home volume").await?;
        self.docker.remove_volume(&names.home).await?;
        step(progress, 80, "removing the host's files").await?;
        self.store.remove(&spec.host_id)?;
        step(progress, 100, "deleted").await
    }

    /// Rewrites the secret files and, if the host runs, applies them inside at once: a new password,
    /// or the gateways' keys as they are now (a removed gateway's key leaves the host).
    pub async fn apply_secrets<P: Progress>(
        &self,
        spec: &HostSpec,
        progress: &mut P,
        done: &str,
    ) -> Result<(), Error> {
        let names = self.names(&spec.short_id);
        step(progress, 10, "writing the new secrets").await?;
        self.store.write(&spec.host_id, &HostSecrets::from(spec))?;
        let running = self
            .docker
            .inspect_container(&names.host)
            .await?
            .is_some_and(|c| RunState::of(&c) == RunState::Running);
        if running {
            step(progress, 50, "applying the secrets in the running host").await?;
            let out = self
                .docker
                .exec(&names.host, &["/usr/local/sbin/host-apply-secrets"])
                .await?;
            if out.exit_code != 0 {
                return Err(Error::ApplySecrets {
                    code: out.exit_code,
                    output: out.output.trim().to_owned(),
                });
            }
        }
        step(progress, 100, done).await
    }

    /// Create, start and the second half of rebuild: ensure each piece in order, firewall before
    /// the host container, sshd answering last.
    pub(super) async fn bring_up<P: Progress>(
        &self,
        spec: &HostSpec,
        progress: &mut P,
        verb: &str,
    ) -> Result<(), Error> {
        let names = self.names(&spec.short_id);
        let node = &self.settings.node_name;
        let host_id = spec.host_id.as_str();
        step(progress, 20, &format!("{verb}: checking the image")).await?;
        self.docker.require_image(&self.settings.host_image).await?;
        self.store.set_stopped(host_id, false)?;
        self.set_egress_cut(host_id, spec.egress_cut);

        step(progress, 25, "preparing the hosts network").await?;
        let bridge = self.ensure_network().await?;

        step(progress, 30, "preparing the home volume").await?;
        self.docker
            .ensure_volume(&names.home, &labels_for(node, Role::Home, Some(host_id)))
            .await?;

        step(progress, 35, "writing the host's secrets").await?;
        let secrets_dir = self.store.write(host_id, &HostSecrets::from(spec))?;
        self.store.ensure_host_key(host_id)?;
        let egress_dir = self.store.ensure_egress_dir(host_id)?;
        // Whatever was found before is about the old egress; checked again once this is up.
        self.set_egress_health(host_id, None);
        let runtime = match &spec.egress {
            Some(egress) => {
                self.require_tunnel_programs(egress)?;
                step(progress, 37, "resolving the egress tunnel server").await?;
                let endpoint = tunnel::resolve(egress).await?;
                Some(RuntimeConfig {
                    spec: egress.clone(),
                    endpoint_ip: *endpoint.ip(),
                    netns_inode: None,
                })
            }
            None => None,
        };

        step(progress, 40, "starting the egress container").await?;
        let body = containers::egress_body(&self.settings, spec, &egress_dir.to_string_lossy());
        self.replace_egress_of_other_shape(&names, &body).await?;
        self.docker.ensure_container(&names.egress, body).await?;
        self.docker.start_container(&names.egress).await?;

        step(progress, 50, "installing the firewall").await?;
        let cut = self.egress_cut(host_id);
        let pid = self
            .apply_firewall(&names, &bridge, runtime.as_ref(), cut)
            .await?;
        // Only now, for the namespace that has the rules, does the tunnel runtime get its work.
        self.write_runtime_config(host_id, runtime, pid)?;

        step(progress, 60, "creating the host container").await?;
        let body = containers::host_body(&self.settings, spec, &names, &secrets_dir.to_string_lossy());
        self.docker.ensure_container(&names.host, body).await?;

        step(progress, 70, "starting the host container").await?;
        self.start_host_in_namespace(&names, pid).await?;

        step(progress, 80, "waiting for sshd").await?;
        let address = self.egress_address(&names).await?;
        self.wait_for_sshd(address, progress).await?;
        if spec.egress.is_some() {
            step(progress, 90, "waiting for the egress tunnel").await?;
            match self.wait_for_tunnel(host_id).await {
                Some(status) if status.is_up() => {}
                status => {
                    // The host is usable (and closed) without its tunnel; the egress health shows it.
                    let why = status
                        .and_then(|s| s.last_error)
                        .unwrap_or_else(|| "no status".into());
                    tracing::warn!(host_id, error = %why, "egress tunnel not up yet");
                }
            }
        }
        step(progress, 100, "running").await
    }

    /// Checks that the programs a tunnel of this kind needs are on the node.
    pub fn require_tunnel_programs(&self, egress: &wire::EgressSpec) -> Result<(), Error> {
        if self.settings.egress_runtime.is_none() {
            return Err(Error::EgressUnavailable(format!(
                "{} not found (set EGRESS_RUNTIME_BIN)",
                crate::config::EGRESS_RUNTIME_NAME
            )));
        }
        if matches!(egress.tunnel, wire::Tunnel::Proxy { .. }) && self.settings.sing_box.is_none() {
            return Err(Error::EgressUnavailable(
                "sing-box not found (set SING_BOX_BIN)".into(),
            ));
        }
        Ok(())
    }

    /// The namespace owner of egress tests: a bound host's egress container, labelled as a test.
    pub fn egress_test_body(&self, dir: &str) -> bollard::models::ContainerCreateBody {
        containers::egress_test_body(&self.settings, dir)
    }

    /// An egress container made for another egress shape (plain or tunnel, another resolver) is
    /// removed, after the host container that lives in its namespace.
    pub(super) async fn replace_egress_of_other_shape(
        &self,
        names: &Names,
        wanted: &bollard::models::ContainerCreateBody,
    ) -> Result<(), Error> {
        let Some(existing) = self.docker.inspect_container(&names.egress).await? else {
            return Ok(());
        };
        let label = |labels: Option<&HashMap<String, String>>| {
            labels
                .and_then(|l| l.get(containers::EGRESS_SHAPE_LABEL))
                .cloned()
        };
        let have = label(existing.config.as_ref().and_then(|c| c.labels.as_ref()));
        let want = label(wanted.labels.as_ref());
        if have == want {
            return Ok(());
        }
        tracing::info!(container = %names.egress, ?have, ?want, "egress changed shape; re-creating the namespace");
        // Docker ties the host container to the namespace owner's id: both are made anew (the home
        // volume and the secret files stay).
        self.docker.remove_container(&names.host).await?;
        self.docker.remove_container(&names.egress).await?;
        Ok(())
    }

    /// Writes (or withdraws) the tunnel runtime's configuration, tied to the namespace of `pid`.
    pub(super) fn write_runtime_config(
        &self,
        host_id: &str,
        runtime: Option<RuntimeConfig>,
        pid: i64,
    ) -> Result<(), Error> {
        match runtime {
            Some(mut config) => {
                config.netns_inode = tunnel::netns_inode(pid);
                let bytes = serde_json::to_vec_pretty(&config)
                    .map_err(|e| Error::InvalidSpec(format!("egress configuration: {e}")))?;
                self.store.write_egress_config(host_id, Some(&bytes))?;
            }
            None => self.store.write_egress_config(host_id, None)?,
        }
        Ok(())
    }

    /// Polls the runtime's status until the tunnel is up or the wait is over.
    pub(super) async fn wait_for_tunnel(&self, host_id: &str) -> Option<RuntimeStatus> {
        let until = Instant::now() + self.settings.tunnel_ready_timeout;
        tunnel::wait_up(&self.store.egress_dir(host_id), until).await
    }

    /// Starts the host container after the firewall went into the namespace of egress process
    /// `pid`, and checks that the namespace is still that one (the egress container did not restart
    /// in between) with the host inside it.
    pub(super) async fn start_host_in_namespace(&self, names: &Names, pid: i64) -> Result<(), Error> {
        let host = self.docker.inspect_container(&names.host).await?;
        if let Some(host) = host.as_ref().filter(|h| RunState::of(h) == RunState::Running) {
            // Already running (a retried task): it must be in the egress namespace of now.
            if same_netns(pid, container_pid(host)) == Some(false) {
                tracing::warn!(container = %names.host, "host runs in a stale namespace; restarting it");
                self.docker.stop_container(&names.host, STOP_GRACE).await?;
            }
        }
        self.docker.start_container(&names.host).await?;
        let egress = self.require_running(&names.egress).await?;
        let host = self.require_running(&names.host).await?;
        if container_pid(&egress) != Some(pid) || same_netns(pid, container_pid(&host)) == Some(false) {
            self.docker.stop_container(&names.host, STOP_GRACE).await?;
            return Err(Error::NamespaceChanged);
        }
        Ok(())
    }

    /// Re-asserts the firewall of a host whose egress container runs and, if `start`, brings the
    /// host container up in that namespace (after the rules, never before). A host container left
    /// in a stale namespace (its egress container restarted under it) is restarted. Used by the
    /// reconciler; changes nothing the control plane records.
    pub async fn repair(&self, host_id: &str, start: bool) -> Result<(), Error> {
        let Some(short_id) = self.short_id_of(host_id).await? else {
            return Ok(());
        };
        let names = self.names(&short_id);
        if start {
            self.docker.start_container(&names.egress).await?;
        }
        let bridge = self.ensure_network().await?;
        let runtime = self.runtime_config(host_id)?;
        let inode = runtime.as_ref().and_then(|r| r.netns_inode);
        let cut = self.egress_cut(host_id);
        let pid = self
            .apply_firewall(&names, &bridge, runtime.as_ref(), cut)
            .await?;
        if runtime.is_some() && inode != tunnel::netns_inode(pid) {
            // A new namespace (the egress container restarted): it has its rules now, so the
            // runtime may bring the tunnel up in it.
            self.write_runtime_config(host_id, runtime, pid)?;
        }
        let host = self.docker.inspect_container(&names.host).await?;
        let host_running = host
            .as_ref()
            .is_some_and(|h| RunState::of(h) == RunState::Running);
        let stale = host
            .as_ref()
            .is_some_and(|h| host_running && same_netns(pid, container_pid(h)) == Some(false));
        if host.is_some() && (start || stale) {
            self.start_host_in_namespace(&names, pid).await?;
        }
        Ok(())
    }

    /// Polls until sshd sends its banner on port 22, from the node (the source the firewall admits),
    /// renewing the task's lease with progress while waiting.
    pub(super) async fn wait_for_sshd<P: Progress>(
        &self,
        ip: Ipv4Addr,
        progress: &mut P,
    ) -> Result<(), Error> {
        let addr = SocketAddr::from((ip, 22));
        let started = Instant::now();
        let deadline = started + self.settings.ssh_ready_timeout;
        let mut next_report = started + Duration::from_secs(5);
        loop {
            if ssh_banner(addr, Duration::from_secs(2)).await {
                tracing::info!(%addr, waited_ms = started.elapsed().as_millis() as u64, "sshd answers");
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::SshNotReady {
                    addr,
                    secs: self.settings.ssh_ready_timeout.as_secs(),
                });
            }
            if now >= next_report {
                next_report = now + Duration::from_secs(5);
                let stage = format!("waiting for sshd ({} s)", started.elapsed().as_secs());
                step(progress, 85, &stage).await?;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub(super) async fn step<P: Progress>(progress: &mut P, percent: u8, stage: &str) -> Result<(), Error> {
    progress.step(percent, stage).await.map_err(Error::Interrupted)
}

/// Whether something at `addr` sends an SSH banner within `timeout`.
pub async fn ssh_banner(addr: SocketAddr, timeout: Duration) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"SSH-")
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}
