//! The gateway in process, on `127.0.0.1:0`, between an SSH client and a host's sshd, both russh,
//! and a control plane that answers `/v1/gateway/…` from what the test sets: which login resolves
//! to which host, and which key that host must show. No Docker and no spawned binary: the login
//! decision's path through the gateway, the relay of a command and of a forwarded connection, the
//! pinned host key and the session events, each with what the far side saw.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clap::Parser as _;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg, client, server};
use ssh_proxy::{Config, Keys};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use wire::gateway::{AuthReply, AuthRequest, Credential, Register, SessionEvent, SessionEventKind, Target};

const CREDENTIAL: &str = "gateway-credential-of-the-test-0123456789";
const LOGIN: &str = "alice+h1";
const PASSWORD: &str = "alice-password-1";
/// The account inside the host the gateway logs in as.
const LINUX_USER: &str = "tenant";
const LIMIT: Duration = Duration::from_secs(10);

/// What the control plane was told, and the host key it pins.
struct ControlPlane {
    pinned: String,
    registered: Mutex<Vec<Register>>,
    events: Mutex<Vec<SessionEvent>>,
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(wire::GATEWAY_TOKEN_HEADER)
        .is_some_and(|v| v.as_bytes() == CREDENTIAL.as_bytes())
}

/// Keeps what the gateway posted, if it came with the gateway's credential.
fn keep<T>(headers: &HeaderMap, into: &Mutex<Vec<T>>, body: T) -> StatusCode {
    if !authorized(headers) {
        return StatusCode::UNAUTHORIZED;
    }
    into.lock().unwrap().push(body);
    StatusCode::NO_CONTENT
}

async fn register(
    State(cp): State<Arc<ControlPlane>>,
    headers: HeaderMap,
    Json(body): Json<Register>,
) -> StatusCode {
    keep(&headers, &cp.registered, body)
}

async fn auth(
    State(cp): State<Arc<ControlPlane>>,
    headers: HeaderMap,
    Json(req): Json<AuthRequest>,
) -> Result<Json<AuthReply>, StatusCode> {
    if !authorized(&headers) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let right = req.login == LOGIN
        && matches!(&req.credential, Credential::Password { password } if password == PASSWORD);
    if !right {
        return Ok(Json(AuthReply::Denied {
            reason: "bad_credentials".into(),
        }));
    }
    Ok(Json(AuthReply::Allowed(Box::new(Target {
        user_id: "user-1".into(),
        username: "alice".into(),
        host_id: "host-1".into(),
        short_id: "h1".into(),
        linux_user: LINUX_USER.into(),
        status: "running".into(),
        address: Some("127.0.0.1".into()),
        host_key: Some(cp.pinned.clone()),
        web: None,
        recording: None,
    }))))
}

async fn events(
    State(cp): State<Arc<ControlPlane>>,
    headers: HeaderMap,
    Json(event): Json<SessionEvent>,
) -> StatusCode {
    keep(&headers, &cp.events, event)
}

/// The host's sshd: takes the gateway's client key for [`LINUX_USER`], answers `exec` with what it
/// was asked and exit status 7, and connects forwarded channels to loopback.
#[derive(Clone)]
struct Sshd {
    gateway_key: PublicKey,
    /// Logins it accepted.
    logins: Arc<Mutex<Vec<String>>>,
    /// Commands it ran.
    commands: Arc<Mutex<Vec<String>>>,
}

impl server::Handler for Sshd {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if user == LINUX_USER && key.public_key.key_data() == self.gateway_key.key_data() {
            self.logins.lock().unwrap().push(user.to_owned());
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        self.commands.lock().unwrap().push(command.clone());
        session.channel_success(channel)?;
        session.data(channel, format!("ran: {command}\n"))?;
        session.exit_status_request(channel, 7)?;
        session.eof(channel)?;
        session.close(channel)
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let port = u16::try_from(port_to_connect).unwrap_or(0);
        if host_to_connect != "127.0.0.1" || port == 0 {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let Ok(mut target) = TcpStream::connect(("127.0.0.1", port)).await else {
            reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(async move {
            let mut stream = channel.into_stream();
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut target).await;
        });
        Ok(())
    }
}

/// Serves [`Sshd`] with `key` on `listener` until the test ends.
fn serve_sshd(listener: TcpListener, key: PrivateKey, sshd: Sshd) {
    let config = Arc::new(server::Config {
        keys: vec![key],
        auth_rejection_time: Duration::ZERO,
        ..Default::default()
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (config, sshd) = (config.clone(), sshd.clone());
            tokio::spawn(async move {
                if let Ok(session) = server::run_stream(config, stream, sshd).await {
                    let _ = session.await;
                }
            });
        }
    });
}

/// An echo server on loopback: the target of a forwarded connection.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// The SSH client's check of the gateway: the key it registered.
struct GatewayKey(PublicKey);

impl client::Handler for GatewayKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // Key material only: a key read from the wire has no comment.
        Ok(
            matches!(key, russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } if key.key_data() == self.0.key_data()),
        )
    }
}

/// One gateway, its control plane and a host, all on loopback.
struct Lab {
    gateway: SocketAddr,
    gateway_key: PublicKey,
    cp: Arc<ControlPlane>,
    sshd: Sshd,
    stop: CancellationToken,
    _state: tempfile::TempDir,
}

impl Lab {
    /// `pinned`: the host key the control plane hands the gateway, `None` for the key the host
    /// really has.
    async fn start(pinned: Option<String>) -> Self {
        let state = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(&state.path().join("gateway")).unwrap();
        let host_key = Keys::load_or_create(&state.path().join("host")).unwrap().host;
        let real = host_key.public_key().to_openssh().unwrap();
        let cp = Arc::new(ControlPlane {
            pinned: pinned.unwrap_or(real),
            registered: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/v1/gateway/register", post(register))
            .route("/v1/gateway/auth", post(auth))
            .route("/v1/gateway/events", post(events))
            .with_state(cp.clone());
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_addr = api.local_addr().unwrap();
        let stop = CancellationToken::new();
        let api_stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(api, app)
                .with_graceful_shutdown(api_stop.cancelled_owned())
                .await
                .unwrap();
        });

        let sshd_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sshd_port = sshd_listener.local_addr().unwrap().port();
        let sshd = Sshd {
            gateway_key: keys.client.public_key().clone(),
            logins: Arc::default(),
            commands: Arc::default(),
        };
        serve_sshd(sshd_listener, host_key.as_ref().clone(), sshd.clone());

        let mut config = Config::parse_from([
            "cloud-cli-proxy-ssh-proxy",
            "--control-plane-url",
            &format!("http://{api_addr}"),
            "--state-dir",
            state.path().join("gateway").to_str().unwrap(),
            "--host-ssh-port",
            &sshd_port.to_string(),
            "--host-connect-timeout-secs",
            "5",
            "--name",
            "gateway-under-test",
        ]);
        config.credential = Some(CREDENTIAL.into());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = listener.local_addr().unwrap();
        let gateway_key = keys.host.public_key().clone();
        let shutdown = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            ssh_proxy::run(config, keys, listener, shutdown).await.unwrap();
        });
        Self {
            gateway,
            gateway_key,
            cp,
            sshd,
            stop,
            _state: state,
        }
    }

    /// A client connection to the gateway logged in with `password`; `None` if it was refused.
    async fn login(&self, password: &str) -> Option<client::Handle<GatewayKey>> {
        let config = Arc::new(client::Config::default());
        let mut handle = client::connect(config, self.gateway, GatewayKey(self.gateway_key.clone()))
            .await
            .expect("the gateway answers SSH with the key it registered");
        let auth = handle.authenticate_password(LOGIN, password).await.unwrap();
        auth.success().then_some(handle)
    }

    /// Session events of the given kind received so far.
    fn events(&self, kind: SessionEventKind) -> Vec<SessionEvent> {
        let events = self.cp.events.lock().unwrap();
        events.iter().filter(|e| e.kind == kind).cloned().collect()
    }

    /// Waits until `f` holds, at most [`LIMIT`].
    async fn until(&self, what: &str, f: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + LIMIT;
        while !f(self) {
            assert!(Instant::now() < deadline, "timed out after {LIMIT:?}: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What a command run through the gateway printed, and how it ended.
#[derive(Debug)]
struct Ran {
    out: String,
    err: String,
    status: Option<u32>,
}

/// Runs `command` on a new session channel, until the channel closes.
async fn exec(handle: &client::Handle<GatewayKey>, command: &str) -> Ran {
    let mut channel = handle.channel_open_session().await.unwrap();
    channel.exec(true, command).await.unwrap();
    let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), None);
    let read = async {
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } => err.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                ChannelMsg::Close => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(LIMIT, read)
        .await
        .expect("the command's channel closes");
    Ran {
        out: String::from_utf8_lossy(&out).into_owned(),
        err: String::from_utf8_lossy(&err).into_owned(),
        status,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_and_a_forwarded_connection_reach_the_host_and_are_accounted() {
    let lab = Lab::start(None).await;
    lab.until("the gateway registered", |lab| {
        !lab.cp.registered.lock().unwrap().is_empty()
    })
    .await;
    let registered = lab.cp.registered.lock().unwrap()[0].clone();
    assert_eq!(registered.name, "gateway-under-test");
    assert_eq!(
        registered.host_key.as_deref(),
        Some(lab.gateway_key.to_openssh().unwrap().as_str()),
        "the gateway registers the key it answers clients with"
    );

    let handle = lab.login(PASSWORD).await.expect("the right password logs in");
    let ran = exec(&handle, "echo hello").await;
    assert_eq!(ran.out, "ran: echo hello\n", "{ran:?}");
    assert_eq!(ran.status, Some(7), "the host's exit status comes through");
    assert_eq!(*lab.sshd.commands.lock().unwrap(), ["echo hello"]);
    assert_eq!(
        *lab.sshd.logins.lock().unwrap(),
        [LINUX_USER],
        "the gateway logged in to the host once, with its own key"
    );

    // A forwarded connection (`ssh -L`) to a service on the host's loopback.
    let port = echo_server().await;
    let channel = handle
        .channel_open_direct_tcpip("127.0.0.1", u32::from(port), "127.0.0.1", 50_000)
        .await
        .unwrap();
    let mut stream = channel.into_stream();
    let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    stream.write_all(&sent).await.unwrap();
    let mut back = vec![0u8; sent.len()];
    tokio::time::timeout(LIMIT, stream.read_exact(&mut back))
        .await
        .expect("the echo comes back through both relays")
        .unwrap();
    assert!(back == sent, "the forwarded bytes come back unchanged");
    drop(stream);

    handle
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await
        .unwrap();
    lab.until("the session's end reported", |lab| {
        !lab.events(SessionEventKind::Ended).is_empty()
    })
    .await;
    let started = lab.events(SessionEventKind::Started);
    let ended = lab.events(SessionEventKind::Ended);
    assert_eq!((started.len(), ended.len()), (1, 1), "{started:?} {ended:?}");
    let end = &ended[0];
    assert_eq!((end.user_id.as_str(), end.host_id.as_str()), ("user-1", "host-1"));
    assert_eq!(end.connection_id, started[0].connection_id);
    assert_eq!(end.client_ip, "127.0.0.1");
    assert!(
        end.bytes_in >= sent.len() as u64 && end.bytes_out >= sent.len() as u64,
        "the forwarded bytes are counted both ways: {end:?}"
    );
    assert!(lab.events(SessionEventKind::Failed).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_without_reaching_the_host() {
    let lab = Lab::start(None).await;
    assert!(lab.login("not-the-password").await.is_none());
    // Nothing reached the host, and no session was reported.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(lab.sshd.logins.lock().unwrap().is_empty());
    assert!(lab.cp.events.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_showing_another_key_than_the_pinned_one_is_not_logged_in_to() {
    // The control plane pins a key the host does not have: an address that now belongs to another
    // host must not get the tenant's session.
    let other = Keys::load_or_create(&tempfile::tempdir().unwrap().path().join("other"))
        .unwrap()
        .host
        .public_key()
        .to_openssh()
        .unwrap();
    let lab = Lab::start(Some(other)).await;
    let handle = lab.login(PASSWORD).await.expect("the login itself is allowed");
    let ran = exec(&handle, "echo hello").await;
    assert_eq!(ran.status, Some(1), "{ran:?}");
    assert!(ran.out.is_empty(), "{ran:?}");
    assert!(
        ran.err.contains("host h1 cannot be reached right now"),
        "the client is told the host cannot be reached: {ran:?}"
    );
    assert!(
        lab.sshd.logins.lock().unwrap().is_empty(),
        "the gateway logged in anyway"
    );
    assert!(lab.sshd.commands.lock().unwrap().is_empty());
    lab.until("the failure reported", |lab| {
        !lab.events(SessionEventKind::Failed).is_empty()
    })
    .await;
    let failed = lab.events(SessionEventKind::Failed);
    assert!(
        failed[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("other than its pinned one")),
        "the audit log says why: {failed:?}"
    );
    assert!(lab.events(SessionEventKind::Started).is_empty());
}
