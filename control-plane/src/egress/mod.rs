//! Egress IPs: validation of WireGuard fields and sing-box proxy outbounds.

pub mod proxy;
mod proxy_outbounds;
mod proxy_tls;
pub mod wireguard;
