//! Egress IPs: validation of WireGuard fields and sing-box proxy outbounds, and the tunnel spec
//! agents run.

pub use wire::proxy;
pub mod secrets;
pub mod spec;
pub mod wireguard;
