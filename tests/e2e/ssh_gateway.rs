//! The SSH gateway end to end: the real OpenSSH client (`ssh`, `scp`, `sftp`, `ssh-agent`) through
//! the gateway embedded in the control plane, into real host containers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod ssh_gateway {
    pub mod bench;
    pub mod bounds;
    pub mod forwards;
    pub mod logins;
    pub mod sessions;
    pub mod standalone;
    pub mod transfers;
}
