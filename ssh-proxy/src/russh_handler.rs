//! One client connection: russh's callbacks turned into calls on the control plane (who may log
//! in, and to which host) and on the host's sshd (every channel and request relayed). Who may log
//! in, and where to, is the control plane's decision; this file carries it out, and words what
//! the client is told when the host cannot be reached (stopped, or its sshd not answering).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use russh::keys::ssh_key::HashAlg;
use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, Pty, Sig, client};
use wire::gateway::{
    AuthReply, AuthRequest, Credential, RecordingFailure, RecordingOpen, SessionEvent, SessionEventKind,
    Target,
};

use crate::Context;
use crate::admission::{ChannelSlot, ChannelSlots, Ticket};
use crate::grace::LoggedIn;
use crate::metrics::AuthResult;
use crate::recording;
use crate::relay::{self, SessionLink, Stats};
use crate::upstream::{self, Upstream};

/// A connection's standing before it logs in: counted among those not logged in, and under the
/// login deadline; a verified login ends both.
pub struct Login {
    pub ticket: Ticket,
    pub logged_in: LoggedIn,
}

pub struct Connection {
    ctx: Arc<Context>,
    login: Login,
    /// Every open channel holds a slot, so one connection cannot pile up relay queues.
    slots: ChannelSlots,
    /// The slots of the session channels, given back when the client closes them.
    session_slots: HashMap<ChannelId, ChannelSlot>,
    /// Where the two halves of this connection run (see `workers`).
    sides: relay::Sides,
    id: String,
    client_ip: String,
    /// The host this connection logged in to (set by a successful, verified login).
    target: Option<Target>,
    upstream: Option<Arc<client::Handle<Upstream>>>,
    /// Why the host cannot be reached, once that is known: told to every later channel.
    unreachable: Option<String>,
    sessions: HashMap<ChannelId, SessionLink>,
    /// Session channels that only carry the reason the host cannot be reached.
    refused: HashSet<ChannelId>,
    stats: Arc<Stats>,
    started: Option<Instant>,
}

impl Connection {
    pub fn new(
        ctx: Arc<Context>,
        sides: relay::Sides,
        peer: Option<std::net::SocketAddr>,
        login: Login,
    ) -> Self {
        crate::metrics::get().connection_opened();
        Self {
            slots: ChannelSlots::new(ctx.max_channels),
            ctx,
            login,
            session_slots: HashMap::new(),
            sides,
            id: uuid::Uuid::new_v4().to_string(),
            client_ip: peer.map_or_else(|| "unknown".to_owned(), |p| p.ip().to_string()),
            target: None,
            upstream: None,
            unreachable: None,
            sessions: HashMap::new(),
            refused: HashSet::new(),
            stats: Arc::default(),
            started: None,
        }
    }

    async fn decide(&mut self, login: &str, credential: Credential) -> Auth {
        let verified = !matches!(credential, Credential::PublicKey { verified: false, .. });
        let publickey = matches!(credential, Credential::PublicKey { .. });
        // A key merely offered asks whether it would do; only a signed one is an attempt.
        let count = |result| {
            if verified {
                crate::metrics::get().auth(publickey, result);
            }
        };
        let req = AuthRequest {
            login: login.to_owned(),
            client_ip: self.client_ip.clone(),
            connection_id: self.id.clone(),
            credential,
        };
        match self.ctx.control_plane.auth(&req).await {
            Ok(AuthReply::Allowed(target)) => {
                if verified {
                    tracing::info!(connection = %self.id, login, host = %target.short_id, web = target.web.is_some(), "login accepted");
                    // A dashboard terminal: the control plane is the peer, the browser the client.
                    if let Some(ip) = target.web.as_ref().and_then(|w| w.client_ip.clone()) {
                        self.client_ip = ip;
                    }
                    self.target = Some(*target);
                    self.login.ticket.authenticated();
                    self.login.logged_in.set();
                }
                count(AuthResult::Accepted);
                Auth::Accept
            }
            Ok(AuthReply::Denied { reason }) => {
                if verified {
                    tracing::info!(connection = %self.id, login, reason, "login refused");
                }
                count(AuthResult::Denied);
                Auth::reject()
            }
            Ok(AuthReply::RateLimited { retry_after_secs }) => {
                tracing::info!(connection = %self.id, login, retry_after_secs, "login refused: rate limited");
                count(AuthResult::RateLimited);
                Auth::reject()
            }
            Err(e) => {
                tracing::warn!(connection = %self.id, error = %e, "cannot ask the control plane; refusing the login");
                count(AuthResult::Error);
                Auth::reject()
            }
        }
    }

    /// The connection to the host's sshd, made on first use. `Err` is the line to show the user.
    async fn upstream(&mut self, down: server::Handle) -> Result<Arc<client::Handle<Upstream>>, String> {
        if let Some(up) = &self.upstream {
            return Ok(up.clone());
        }
        if let Some(why) = &self.unreachable {
            return Err(why.clone());
        }
        let Some(target) = self.target.clone() else {
            return Err("not logged in".to_owned());
        };
        let result = if target.status == "running" {
            let dial = upstream::Dial {
                address: target.address.clone(),
                port: self.ctx.host_ssh_port,
                linux_user: target.linux_user.clone(),
                timeout: self.ctx.host_connect_timeout,
                host_key: target.host_key.clone(),
            };
            let connect = upstream::connect(
                dial,
                self.ctx.upstream_config.clone(),
                self.ctx.client_key.clone(),
                down,
                self.sides.clone(),
                self.stats.clone(),
                self.slots.clone(),
            );
            // Started there, the host's session loop stays on that runtime.
            let dialled = Instant::now();
            let connected = self
                .sides
                .host
                .spawn(connect)
                .await
                .unwrap_or(Err(upstream::Error::Stopping));
            crate::metrics::get().upstream_connect(connected.is_ok(), dialled.elapsed());
            connected.map_err(|e| {
                tracing::warn!(connection = %self.id, host = %target.short_id, error = %e, "cannot reach the host");
                (format!("host {} cannot be reached right now; try again in a moment", target.short_id), e.to_string())
            })
        } else {
            Err((
                format!(
                    "host {} is {}; start it (ask your operator, or use your entry link) and try again",
                    target.short_id, target.status
                ),
                format!("host is {}", target.status),
            ))
        };
        match result {
            Ok(handle) => {
                let handle = Arc::new(handle);
                self.upstream = Some(handle.clone());
                self.started = Some(Instant::now());
                crate::metrics::get().session_started();
                self.event(SessionEventKind::Started, None);
                Ok(handle)
            }
            Err((shown, cause)) => {
                self.unreachable = Some(shown.clone());
                self.event(SessionEventKind::Failed, Some(cause));
                Err(shown)
            }
        }
    }

    /// Sends a session event in the background: the audit log must not slow the session down.
    fn event(&self, kind: SessionEventKind, error: Option<String>) {
        let Some(target) = &self.target else { return };
        let (bytes_in, bytes_out) = self.stats.totals();
        let event = SessionEvent {
            kind,
            connection_id: self.id.clone(),
            user_id: target.user_id.clone(),
            host_id: target.host_id.clone(),
            client_ip: self.client_ip.clone(),
            bytes_in,
            bytes_out,
            duration_ms: self
                .started
                .map_or(0, |t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
            error,
            web: target.web.clone(),
        };
        let cp = self.ctx.control_plane.clone();
        // A connection dropped while its worker shuts down has no runtime left to report from.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(connection = %self.id, ?kind, "session event not recorded: gateway stopping");
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = cp.session_event(&event).await {
                tracing::warn!(error = %e, connection = %event.connection_id, "session event not recorded");
            }
        });
    }

    /// Starts recording a session whose pty was just granted, when this login is recorded. `Err`
    /// (the reason to show) only when recording is required and cannot be had; with
    /// `RECORDING_FAILURE=continue` the session goes on unrecorded.
    async fn record(
        &self,
        channel: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        handle: server::Handle,
    ) -> Result<(), String> {
        let (Some(target), Some(link)) = (&self.target, self.link(channel)) else {
            return Ok(());
        };
        let Some(policy) = target.recording else {
            return Ok(());
        };
        if link.tap.get().is_some() {
            return Ok(());
        }
        let open = RecordingOpen {
            connection_id: self.id.clone(),
            user_id: target.user_id.clone(),
            host_id: target.host_id.clone(),
            // A client without a terminal of its own (`ssh -tt` from a script) asks for 0x0; the
            // asciicast header needs a size, so the customary 80x24 stands in.
            width: if cols == 0 { 80 } else { cols },
            height: if rows == 0 { 24 } else { rows },
            term: term.chars().take(64).collect(),
            web: target.web.clone(),
        };
        let ending = recording::Ending {
            handle,
            channel,
            up: link.up_shared(),
        };
        match recording::open(self.ctx.control_plane.clone(), open, policy, ending).await {
            Ok(recorder) => {
                let _ = link.tap.set(recorder);
                Ok(())
            }
            Err(why) if policy.on_failure == RecordingFailure::Refuse => Err(why),
            Err(_) => Ok(()),
        }
    }

    /// A slot for a new channel, or `None` (logged) when the connection has all it may have.
    fn channel_slot(&self) -> Option<ChannelSlot> {
        let slot = self.slots.take();
        if slot.is_none() {
            tracing::info!(connection = %self.id, max = self.ctx.max_channels, "channel refused: too many open");
        }
        slot
    }

    fn link(&self, channel: ChannelId) -> Option<&SessionLink> {
        self.sessions.get(&channel)
    }

    /// Answers the client's request with the host's answer to the same request.
    fn answer(session: &mut Session, channel: ChannelId, ok: bool) -> Result<(), russh::Error> {
        if ok {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let metrics = crate::metrics::get();
        metrics.connection_closed();
        if self.started.is_some() {
            metrics.session_ended();
            self.event(SessionEventKind::Ended, None);
        }
    }
}

/// Relays one request that wants a reply: registers for the reply, sends, waits, answers.
macro_rules! relay_request {
    ($self:ident, $session:ident, $channel:ident, |$up:ident| $send:expr) => {{
        let Some(link) = $self.link($channel) else {
            // On a refused channel the request "succeeds": the client then reads the reason and
            // the exit status instead of stopping at a failed request.
            return if $self.refused.contains(&$channel) {
                $session.channel_success($channel)
            } else {
                $session.channel_failure($channel)
            };
        };
        let pending = link.expect_reply();
        let $up = link.up();
        let ok = $send.await.is_ok() && pending.outcome().await;
        Connection::answer($session, $channel, ok)
    }};
}

impl server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(self
            .decide(
                user,
                Credential::Password {
                    password: password.to_owned(),
                },
            )
            .await)
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let Ok(public_key) = offer.public_key.to_openssh() else {
            return Ok(Auth::reject());
        };
        Ok(self
            .decide(
                user,
                Credential::PublicKey {
                    public_key,
                    verified: false,
                },
            )
            .await)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let Ok(public_key) = key.public_key.to_openssh() else {
            return Ok(Auth::reject());
        };
        tracing::debug!(fingerprint = %key.public_key.fingerprint(HashAlg::Sha256), "public key verified");
        Ok(self
            .decide(
                user,
                Credential::PublicKey {
                    public_key,
                    verified: true,
                },
            )
            .await)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(slot) = self.channel_slot() else {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        self.session_slots.insert(channel.id(), slot);
        let up = match self.upstream(session.handle()).await {
            Ok(up) => up,
            Err(why) => {
                self.refused.insert(channel.id());
                reply.accept().await;
                tokio::spawn(relay::refuse(channel, why));
                return Ok(());
            }
        };
        match up.channel_open_session().await {
            Ok(up_channel) => {
                let id = channel.id();
                let link = relay::session(
                    channel,
                    up_channel,
                    session.handle(),
                    &self.sides,
                    self.stats.clone(),
                );
                self.sessions.insert(id, link);
                reply.accept().await;
            }
            Err(e) => {
                tracing::warn!(connection = %self.id, error = %e, "host refused a session channel");
                self.session_slots.remove(&channel.id());
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
            }
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(slot) = self.channel_slot() else {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        let Ok(up) = self.upstream(session.handle()).await else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        let (host, originator) = (host_to_connect.to_owned(), originator_address.to_owned());
        let (stats, sides) = (self.stats.clone(), self.sides.clone());
        let handle = session.handle();
        // In its own task: a slow or unreachable target must not hold up the connection's other
        // channels.
        tokio::spawn(async move {
            let _slot = slot;
            match up
                .channel_open_direct_tcpip(host, port_to_connect, originator, originator_port)
                .await
            {
                Ok(up_channel) => {
                    reply.accept().await;
                    relay::pipe(channel, up_channel, handle, &sides, stats).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "host refused a direct-tcpip channel");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
        Ok(())
    }

    async fn channel_close(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        self.sessions.remove(&channel);
        self.refused.remove(&channel);
        self.session_slots.remove(&channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let granted = {
            let Some(link) = self.link(channel) else {
                return if self.refused.contains(&channel) {
                    session.channel_success(channel)
                } else {
                    session.channel_failure(channel)
                };
            };
            let pending = link.expect_reply();
            link.up()
                .request_pty(true, term, col_width, row_height, pix_width, pix_height, modes)
                .await
                .is_ok()
                && pending.outcome().await
        };
        if granted
            && let Err(why) = self
                .record(channel, term, col_width, row_height, session.handle())
                .await
        {
            // Recording is required and cannot be had: the session ends before anything runs. Like
            // a host that cannot be reached, the channel's requests then "succeed" so that the
            // client reads the reason and the exit status instead of stopping at a failed request.
            let up = self.sessions.remove(&channel).map(|link| link.up_shared());
            self.refused.insert(channel);
            let handle = session.handle();
            tokio::spawn(async move {
                let line = format!("cloud-cli-proxy: {why}; the session is not started\r\n");
                let _ = handle.extended_data(channel, 1, line.into_bytes()).await;
                let _ = handle.exit_status_request(channel, 1).await;
                let _ = handle.eof(channel).await;
                let _ = handle.close(channel).await;
                if let Some(up) = up {
                    let _ = up.close().await;
                }
            });
            return session.channel_success(channel);
        }
        Connection::answer(session, channel, granted)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        relay_request!(self, session, channel, |up| up.set_env(
            true,
            variable_name,
            variable_value
        ))
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        relay_request!(self, session, channel, |up| up.request_shell(true))
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        relay_request!(self, session, channel, |up| up.exec(true, data.to_vec()))
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        relay_request!(self, session, channel, |up| up.request_subsystem(true, name))
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(link) = self.link(channel) else {
            return Ok(false);
        };
        let pending = link.expect_reply();
        Ok(link.up().agent_forward(true).await.is_ok() && pending.outcome().await)
    }

    /// No reply is wanted (RFC 4254 6.7): forwarded as is, never waited on, so a resize in the
    /// middle of heavy output cannot stall the connection.
    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(link) = self.link(channel) {
            if let Some(recorder) = link.tap.get() {
                recorder.resize(col_width, row_height);
            }
            let _ = link
                .up()
                .window_change(col_width, row_height, pix_width, pix_height)
                .await;
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(link) = self.link(channel) {
            let _ = link.up().signal(signal).await;
        }
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Ok(up) = self.upstream(session.handle()).await else {
            return Ok(false);
        };
        match up.tcpip_forward(address, *port).await {
            Ok(bound) => {
                if *port == 0 {
                    *port = bound;
                }
                Ok(true)
            }
            Err(e) => {
                tracing::debug!(error = %e, address, port = *port, "host refused a remote forward");
                Ok(false)
            }
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Ok(up) = self.upstream(session.handle()).await else {
            return Ok(false);
        };
        Ok(up.cancel_tcpip_forward(address, port).await.is_ok())
    }
}
