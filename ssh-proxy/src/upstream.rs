//! The gateway's own SSH connection to a host's sshd: logs in with the gateway's client key as the
//! host's account, and hands channels that sshd opens towards us (`-R` connections, agent requests)
//! on to the client.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use russh::{Channel, ChannelOpenFailure, server};

use crate::relay::{self, Stats};

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
    #[error("cannot reach the host: {0}")]
    Ssh(#[from] russh::Error),
}

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct Dial<'a> {
    pub address: Option<&'a str>,
    pub port: u16,
    pub linux_user: &'a str,
    pub timeout: Duration,
}

pub async fn connect(
    dial: Dial<'_>,
    config: Arc<client::Config>,
    key: Arc<PrivateKey>,
    down: server::Handle,
    stats: Arc<Stats>,
) -> Result<Handle<Upstream>, Error> {
    let address = dial.address.ok_or(Error::NoAddress)?;
    let ip: IpAddr = address
        .parse()
        .map_err(|_| Error::BadAddress(address.to_owned()))?;
    let handler = Upstream { down, stats };
    let login = async {
        let mut handle = client::connect(config, (ip, dial.port), handler).await?;
        let auth = handle
            .authenticate_publickey(dial.linux_user, PrivateKeyWithHashAlg::new(key, None))
            .await?;
        if auth.success() {
            Ok(handle)
        } else {
            Err(Error::Refused)
        }
    };
    tokio::time::timeout(dial.timeout, login)
        .await
        .map_err(|_| Error::Timeout(dial.timeout))?
}

/// Callbacks of the connection to the host.
pub struct Upstream {
    down: server::Handle,
    stats: Arc<Stats>,
}

impl client::Handler for Upstream {
    type Error = russh::Error;

    /// Host keys are made per container and change on rebuild; the gateway reaches hosts only over
    /// the node's own bridge, where no tenant can take another host's address (no NET_ADMIN), so
    /// the address is what identifies the host.
    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
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
        let down = self.down.clone();
        let stats = self.stats.clone();
        let (connected, originator) = (connected_address.to_owned(), originator_address.to_owned());
        tokio::spawn(async move {
            match down
                .channel_open_forwarded_tcpip(connected, connected_port, originator, originator_port)
                .await
            {
                Ok(client_side) => {
                    reply.accept().await;
                    relay::pipe(client_side, channel, stats).await;
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
        let down = self.down.clone();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            match down.channel_open_agent().await {
                Ok(client_side) => {
                    reply.accept().await;
                    relay::pipe(client_side, channel, stats).await;
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
