//! The SSH gateway: accepts `ssh -p 2222`, authenticates users against the control plane and relays
//! their channels to the sshd of the right host container.
//!
//! Not implemented yet: this crate holds the binary name and its place in the workspace so that
//! packaging and the systemd unit are settled; running it only says so.

/// Why the binary cannot run in this release, as one line for the operator.
pub const NOT_YET: &str =
    "the SSH gateway is not part of this release yet; run cloud-cli-proxy-control-plane";
