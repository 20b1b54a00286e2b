//! The node agent: runs on every Docker node and carries host tasks out (containers, volumes, egress
//! tunnels), reporting progress to the control plane.
//!
//! Not implemented yet: this crate holds the binary name and its place in the workspace so that
//! packaging and the systemd unit are settled; running it only says so.

/// Why the binary cannot run in this release, as one line for the operator.
pub const NOT_YET: &str = "the node agent is not part of this release yet; run cloud-cli-proxy-control-plane";
