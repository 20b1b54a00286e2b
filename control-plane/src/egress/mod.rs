//! Egress IPs: validation of WireGuard fields and sing-box proxy outbounds, and the tunnel spec
//! agents run.

pub mod proxy;
mod proxy_outbounds;
mod proxy_tls;
pub mod secrets;
pub mod spec;
pub mod wireguard;
