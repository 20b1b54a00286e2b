//! The gateway's own SSH connection to a host's sshd: logs in with the gateway's client key as the
//! host's account, and hands channels that sshd opens towards us (`-R` connections, agent requests)
//! on to the client.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use russh::{Channel, ChannelOpenFailure, server};
use tokio::io::BufReader;
use tokio::net::TcpStream;

use crate::admission::ChannelSlots;
use crate::relay::{self, Sides, Stats};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the host has no address yet")]
    NoAddress,
    #[error("the host's address `{0}` is not an IP address")]
    BadAddress(String),
    #[error("the host did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the host's sshd refused the gateway's key")]
    Refused,
    #[error("the host presented an SSH host key other than its pinned one")]
    HostKeyMismatch,
    #[error("the host's pinned key is not an OpenSSH public key")]
    BadHostKey,
    #[error("cannot reach the host: {0}")]
    Ssh(#[from] russh::Error),
    #[error("the gateway is stopping")]
    Stopping,
}

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct Dial {
    pub address: Option<String>,
    pub port: u16,
    pub linux_user: String,
    pub timeout: Duration,
    /// The host's pinned key (OpenSSH line); `None`: any key (a host no agent reported one for).
    pub host_key: Option<String>,
}

pub async fn connect(
    dial: Dial,
    config: Arc<client::Config>,
    key: Arc<PrivateKey>,
    down: server::Handle,
    sides: Sides,
    stats: Arc<Stats>,
    slots: ChannelSlots,
) -> Result<Handle<Upstream>, Error> {
    let address = dial.address.ok_or(Error::NoAddress)?;
    let ip: IpAddr = address.parse().map_err(|_| Error::BadAddress(address.clone()))?;
    let pinned = match &dial.host_key {
        Some(line) => Some(russh::keys::PublicKey::from_openssh(line).map_err(|_| Error::BadHostKey)?),
        None => None,
    };
    // The client's key preference puts ed25519 first, the type agents make, so sshd presents the
    // pinned key.
    let login = async {
        let mut wait = RETRY_FIRST;
        loop {
            let handler = Upstream {
                down: down.clone(),
                sides: sides.clone(),
                stats: stats.clone(),
                pinned: pinned.clone(),
                slots: slots.clone(),
            };
            match login_once(&config, (ip, dial.port), handler, &dial.linux_user, &key).await {
                // A reset or refusal while sshd is busy (or still starting) is worth another try
                // within the time limit; a refused key is final.
                Err(Error::Ssh(e)) if is_transient(&e) => {
                    tracing::debug!(error = %e, retry_in = ?wait, "host sshd not ready; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_MAX);
                }
                other => return other,
            }
        }
    };
    tokio::time::timeout(dial.timeout, login)
        .await
        .map_err(|_| Error::Timeout(dial.timeout))?
}

const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

async fn login_once(
    config: &Arc<client::Config>,
    addr: (IpAddr, u16),
    handler: Upstream,
    user: &str,
    key: &Arc<PrivateKey>,
) -> Result<Handle<Upstream>, Error> {
    let stream = TcpStream::connect(addr).await.map_err(russh::Error::from)?;
    stream.set_nodelay(config.nodelay).map_err(russh::Error::from)?;
    let stream = BufReader::with_capacity(crate::READ_BUFFER, stream);
    let mut handle = match client::connect_stream(config.clone(), stream, handler).await {
        Ok(handle) => handle,
        Err(russh::Error::UnknownKey) => return Err(Error::HostKeyMismatch),
        Err(e) => return Err(e.into()),
    };
    let auth = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), None))
        .await?;
    if auth.success() {
        Ok(handle)
    } else {
        Err(Error::Refused)
    }
}

/// Errors of a connection that sshd dropped before the login finished.
fn is_transient(e: &russh::Error) -> bool {
    match e {
        russh::Error::IO(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::BrokenPipe
        ),
        russh::Error::Disconnect | russh::Error::HUP => true,
        _ => false,
    }
}

/// Callbacks of the connection to the host.
pub struct Upstream {
    down: server::Handle,
    sides: Sides,
    stats: Arc<Stats>,
    pinned: Option<russh::keys::PublicKey>,
    /// The client connection's channel slots: channels the host opens towards the client count too.
    slots: ChannelSlots,
}

impl client::Handler for Upstream {
    type Error = russh::Error;

    /// The host must present its pinned key: an address alone can point at another host (a stale
    /// address after containers were renumbered), and the gateway logs in there as the tenant.
    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let Some(pinned) = &self.pinned else {
            return Ok(true);
        };
        let presented = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key.key_data(),
            russh::keys::PublicKeyOrCertificate::Certificate(cert) => cert.public_key(),
        };
        Ok(presented == pinned.key_data())
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<client::Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let Some(slot) = self.slots.take() else {
            tracing::info!("forwarded connection refused: too many channels open");
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        let (down, sides, stats) = (self.down.clone(), self.sides.clone(), self.stats.clone());
        let (connected, originator) = (connected_address.to_owned(), originator_address.to_owned());
        tokio::spawn(async move {
            let _slot = slot;
            match down
                .channel_open_forwarded_tcpip(connected, connected_port, originator, originator_port)
                .await
            {
                Ok(client_side) => {
                    reply.accept().await;
                    relay::pipe(client_side, channel, down, &sides, stats).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "client refused a forwarded connection");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let Some(slot) = self.slots.take() else {
            tracing::info!("agent channel refused: too many channels open");
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        let (down, sides, stats) = (self.down.clone(), self.sides.clone(), self.stats.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match down.channel_open_agent().await {
                Ok(client_side) => {
                    reply.accept().await;
                    relay::pipe(client_side, channel, down, &sides, stats).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "client refused an agent channel");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
        Ok(())
    }
}
