//! The command line (clap): every command, flag and its `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Command-line client of cloud-cli-proxy: manage users, hosts and egress as the operator, or your
/// own hosts as a tenant, and open SSH sessions through the gateway.
///
/// Sign in once with `cloud-cli-proxy login`; `CLOUD_CLI_PROXY_URL` and `CLOUD_CLI_PROXY_TOKEN`
/// (a session or API token) override what it stored.
#[derive(Debug, Parser)]
#[command(name = "cloud-cli-proxy", version, max_term_width = 100)]
pub struct Cli {
    /// The control plane's base URL, e.g. http://cp.example.com:8080 (else the one `login` stored).
    #[arg(long, global = true, env = "CLOUD_CLI_PROXY_URL", value_name = "URL")]
    pub url: Option<String>,
    /// A PEM file of the certificate authority to trust for an https:// control plane, besides the
    /// system's.
    #[arg(long, global = true, env = "CLOUD_CLI_PROXY_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Print the API's JSON objects unchanged instead of tables (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sign in and store the token in ~/.config/cloud-cli-proxy/ (mode 0600).
    Login(LoginArgs),
    /// Forget the stored token.
    Logout,
    /// Show the signed-in account.
    Whoami,
    /// Change your own password (tenant). Every session ends with it, so the stored sign-in is
    /// renewed with the new password.
    Password {
        /// Read the current and the new password from standard input, one line each.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Accounts (operator).
    #[command(subcommand)]
    Users(UsersCmd),
    /// SSH public keys: your own, or a user's with --user (operator).
    #[command(subcommand)]
    SshKeys(SshKeysCmd),
    /// Egress IPs: the tunnels hosts leave through (operator).
    #[command(subcommand)]
    EgressIps(EgressCmd),
    /// Hosts: all of them (operator) or your own (tenant).
    #[command(subcommand)]
    Hosts(HostsCmd),
    /// Bindings of hosts to egress IPs (operator).
    #[command(subcommand)]
    Bindings(BindingsCmd),
    /// Traffic quotas on hosts and users: an event, a stop or a cut egress past a limit.
    #[command(subcommand)]
    Quotas(QuotasCmd),
    /// Host tasks and their progress.
    #[command(subcommand)]
    Tasks(TasksCmd),
    /// The audit log (operator).
    #[command(subcommand)]
    Events(EventsCmd),
    /// Recorded terminal sessions and the recording settings of users and hosts (operator).
    #[command(subcommand)]
    Recordings(RecordingsCmd),
    /// Personal API tokens of the signed-in account.
    #[command(subcommand)]
    ApiTokens(ApiTokensCmd),
    /// Docker nodes and their agents (operator).
    #[command(subcommand)]
    Nodes(NodesCmd),
    /// SSH gateways (operator).
    #[command(subcommand)]
    Gateways(GatewaysCmd),
    /// Counts of users, hosts, egress IPs, tasks and agents (operator).
    Stats,
    /// Open a shell (or run COMMAND) on a host through the SSH gateway with a single-use secret.
    ///
    /// Runs OpenSSH's `ssh`; the secret reaches it through SSH_ASKPASS, never a command line. A
    /// stopped host is started first.
    Ssh(SshArgs),
    /// Print a shell completion script (bash, zsh or fish).
    ///
    /// For example `cloud-cli-proxy completion bash > ~/.local/share/bash-completion/completions/cloud-cli-proxy`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The control plane's base URL (asked when neither this, --url nor CLOUD_CLI_PROXY_URL gives it).
    #[arg(value_name = "URL")]
    pub login_url: Option<String>,
    /// The username (asked when missing).
    #[arg(long, short)]
    pub username: Option<String>,
    /// Read the password from standard input (its first line) instead of asking on the terminal.
    #[arg(long)]
    pub password_stdin: bool,
    /// The second factor's current code (or a recovery code), for an account that has one; asked
    /// when needed and a terminal is there.
    #[arg(long, value_name = "CODE")]
    pub totp: Option<String>,
}

/// `--wait` (the default) or `--no-wait`.
#[derive(Debug, Args, Clone, Copy)]
pub struct WaitArgs {
    /// Follow the task with a progress bar until it ends (the default).
    #[arg(long, overrides_with = "no_wait")]
    pub wait: bool,
    /// Print the queued task and return at once.
    #[arg(long)]
    pub no_wait: bool,
}

impl WaitArgs {
    pub fn wait(self) -> bool {
        !self.no_wait
    }
}

#[derive(Debug, Args, Clone, Copy)]
pub struct PageArgs {
    /// Page of the list, from 1.
    #[arg(long, default_value_t = 1)]
    pub page: u32,
    /// Rows a page (1-500).
    #[arg(long, default_value_t = 50)]
    pub page_size: u32,
}

#[derive(Debug, Subcommand)]
pub enum UsersCmd {
    /// List accounts.
    List {
        /// Only `active` or `disabled` accounts.
        #[arg(long)]
        status: Option<String>,
        /// Part of the username, any case.
        #[arg(long, short = 'q')]
        search: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one account (USER: its id or username).
    Show { user: String },
    /// Create a tenant account; the password is asked, or read from standard input.
    Create {
        username: String,
        /// Read the password from standard input (its first line).
        #[arg(long)]
        password_stdin: bool,
        /// When the account stops working (RFC 3339, e.g. 2027-01-31T00:00:00Z).
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
    },
    /// Let a disabled account sign in again.
    Enable { user: String },
    /// Disable an account: its sessions and tokens stop working at once.
    Disable { user: String },
    /// Delete an account and its hosts.
    Delete { user: String },
    /// Replace the account's password with a generated one, printed once.
    RotatePassword { user: String },
    /// Set or clear the account's expiry.
    Expiry {
        user: String,
        /// The new expiry (RFC 3339).
        #[arg(
            long,
            value_name = "TIME",
            conflicts_with = "never",
            required_unless_present = "never"
        )]
        at: Option<String>,
        /// Never expire.
        #[arg(long)]
        never: bool,
    },
    /// Remove the second factor of an account that lost it.
    ResetTotp { user: String },
}

#[derive(Debug, Subcommand)]
pub enum SshKeysCmd {
    /// List keys.
    List {
        /// The user whose keys (operator; id or username).
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Add a public key: KEY is the OpenSSH line, a file holding it (e.g. ~/.ssh/id_ed25519.pub),
    /// or `-` for standard input.
    Add {
        key: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
    /// Generate a key pair on the server; the private key is shown once.
    Generate {
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// Write the private key to this file (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Delete a key by its id.
    Delete {
        key_id: String,
        #[arg(long)]
        user: Option<String>,
    },
}

/// The fields of an egress IP; `create` needs label, ip-address and tunnel-type.
#[derive(Debug, Args, Default)]
pub struct EgressFields {
    #[arg(long)]
    pub label: Option<String>,
    /// The declared exit address (IPv4 or IPv6).
    #[arg(long)]
    pub ip_address: Option<String>,
    /// `wireguard` or `proxy`.
    #[arg(long)]
    pub tunnel_type: Option<String>,
    #[arg(long)]
    pub provider: Option<String>,
    #[arg(long)]
    pub dns_server: Option<String>,
    /// WireGuard: the server's host:port.
    #[arg(long)]
    pub wg_endpoint: Option<String>,
    /// WireGuard: the server's public key (base64).
    #[arg(long)]
    pub wg_public_key: Option<String>,
    #[arg(long)]
    pub wg_preshared_key: Option<String>,
    /// WireGuard: comma-separated CIDRs (default 0.0.0.0/0, ::/0).
    #[arg(long)]
    pub wg_allowed_ips: Option<String>,
    #[arg(long)]
    pub wg_dns_server: Option<String>,
    /// WireGuard: our tunnel address (CIDR).
    #[arg(long)]
    pub wg_peer_address: Option<String>,
    /// Proxy: a sing-box outbound as JSON, or @FILE holding it.
    #[arg(long, value_name = "JSON|@FILE")]
    pub proxy_config: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EgressCmd {
    /// List egress IPs.
    List {
        /// Only `wireguard` or `proxy`.
        #[arg(long)]
        tunnel_type: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one (EGRESS: its id or label).
    Show { egress: String },
    /// Declare an egress IP.
    Create(EgressFields),
    /// Change the fields given.
    Update {
        egress: String,
        #[command(flatten)]
        fields: EgressFields,
    },
    /// Delete an egress IP that no host is bound to.
    Delete { egress: String },
    /// Run the three checks (connectivity, exit IP, DNS leak) through the tunnel on an agent.
    Test { egress: String },
    /// Replace the key pair egress tests use.
    RotateWgKey { egress: String },
}

#[derive(Debug, Subcommand)]
pub enum HostsCmd {
    /// List hosts.
    List {
        /// Only this user's hosts (operator; id or username).
        #[arg(long)]
        user: Option<String>,
        /// Only hosts in this status (pending, creating, running, stopped, error, deleting).
        #[arg(long)]
        status: Option<String>,
        /// Part of the name, short id or owner's username (operator).
        #[arg(long, short = 'q')]
        search: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one host (HOST: its id, a unique prefix of its id or short id, or its name).
    Show { host: String },
    /// Create a host for a user (operator); its SSH password is printed once.
    Create {
        /// The owner (id or username).
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: Option<String>,
        /// Memory limit in MiB (256-65536, default 2048).
        #[arg(long)]
        memory_mb: Option<i64>,
        /// CPU limit in thousandths of a core (100-32000, default 1000).
        #[arg(long)]
        cpu_millis: Option<i64>,
        /// Process limit (64-32768, default 1024).
        #[arg(long)]
        pids_limit: Option<i64>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Start a stopped host.
    Start {
        host: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Stop a host (operator).
    Stop {
        host: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Recreate the host from the managed image; the home volume is kept unless --wipe.
    Rebuild {
        host: String,
        /// Also empty the home volume.
        #[arg(long)]
        wipe: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Replace the host's SSH password with a generated one, printed once (operator).
    RotatePassword {
        host: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete the host: container, volumes and files (operator).
    Delete {
        host: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// The host's traffic per hour (the last 24 by default) or per day, received and sent.
    Traffic {
        host: String,
        /// `hour` or `day` (UTC days; the last 30 by default).
        #[arg(long, default_value = "hour")]
        bucket: String,
        /// From this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Until this time (RFC 3339; default now).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
    },
    /// Show the host's short entry link, or change it with the flags (operator).
    EntryLink {
        host: String,
        /// Open the link.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Close the link (it then answers like a link that never existed).
        #[arg(long)]
        disable: bool,
        /// Close the link at this time (RFC 3339).
        #[arg(long, value_name = "TIME", conflicts_with = "no_expiry")]
        expires_at: Option<String>,
        /// Keep the link open with no end.
        #[arg(long)]
        no_expiry: bool,
        /// Give the link a new id; the old one stops working at once.
        #[arg(long)]
        rotate: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum QuotasCmd {
    /// List quotas (operator: all, or a host's or user's; tenant: those on you and your hosts).
    List {
        #[arg(long, conflicts_with = "user")]
        host: Option<String>,
        /// A user (id or username).
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one quota and its use in the current period (operator).
    Show { quota_id: String },
    /// Add a quota on a host or on all of a user's hosts together (operator).
    Create {
        #[arg(long, required_unless_present = "user", conflicts_with = "user")]
        host: Option<String>,
        /// A user (id or username).
        #[arg(long)]
        user: Option<String>,
        /// The limit: bytes, or with a unit (KiB, MiB, GiB, TiB; KB, MB, GB, TB), e.g. `100GiB`.
        #[arg(long)]
        limit: String,
        /// `in` (received), `out` (sent) or `total`.
        #[arg(long, default_value = "total")]
        direction: String,
        /// `daily`, `weekly` or `monthly` (UTC).
        #[arg(long, default_value = "monthly")]
        period: String,
        /// `event`, `stop` or `cut_egress`.
        #[arg(long, default_value = "event")]
        action: String,
    },
    /// Remove a quota; hosts whose egress it cut get it back (operator).
    Delete { quota_id: String },
}

#[derive(Debug, Subcommand)]
pub enum BindingsCmd {
    /// List bindings.
    List {
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        egress_ip: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one binding.
    Show { binding_id: String },
    /// Bind a host to an egress IP (effective at the host's next start).
    Create {
        #[arg(long)]
        host: String,
        /// The egress IP (id or label).
        #[arg(long)]
        egress_ip: String,
        /// WireGuard: this peer's own tunnel address (CIDR), when the provider gives each its own.
        #[arg(long)]
        wg_peer_address: Option<String>,
    },
    /// Remove a binding.
    Delete { binding_id: String },
    /// Give the bound host a new WireGuard key pair.
    RotateWgKey { binding_id: String },
}

#[derive(Debug, Subcommand)]
pub enum TasksCmd {
    /// List tasks, newest first (operator).
    List {
        #[arg(long)]
        host: Option<String>,
        /// queued, running, succeeded, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// create, start, stop, rebuild, delete, rotate_ssh_password.
        #[arg(long)]
        kind: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one task.
    Show { task_id: String },
    /// Cancel a queued task, or ask a running one to stop (operator).
    Cancel { task_id: String },
    /// Follow a task with a progress bar until it ends.
    Watch { task_id: String },
}

#[derive(Debug, Subcommand)]
pub enum EventsCmd {
    /// List events, newest first.
    List {
        /// Events about this user (id or username).
        #[arg(long)]
        user: Option<String>,
        /// Events about this host.
        #[arg(long)]
        host: Option<String>,
        /// From this time on (RFC 3339).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Up to this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Event types, comma-separated; one ending in `.` is a prefix (e.g. `auth.`).
        #[arg(long = "type", value_name = "TYPES")]
        kind: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiTokensCmd {
    /// List your tokens (never their secrets).
    List {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Make a token; its secret is printed once.
    Create {
        name: String,
        /// 1-365 (default 30).
        #[arg(long)]
        expires_in_days: Option<u32>,
        /// `full` (default), `read`, or `metrics` (only `GET /metrics`; operators).
        #[arg(long)]
        scope: Option<String>,
    },
    /// Revoke a token at once.
    Delete { token_id: String },
}

#[derive(Debug, Subcommand)]
pub enum NodesCmd {
    /// List nodes.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecordingsCmd {
    /// List recorded sessions, newest first.
    List {
        /// Sessions of this user (id or username).
        #[arg(long)]
        user: Option<String>,
        /// Sessions on this host.
        #[arg(long)]
        host: Option<String>,
        /// Started at or after this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Started at or before this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Write a recording as an asciicast v2 file to standard output (`asciinema play` plays it).
    Cast { recording_id: String },
    /// Show or change whether a user's or a host's terminal sessions are recorded.
    Set {
        /// The user (id or username).
        #[arg(long, conflicts_with = "host", required_unless_present = "host")]
        user: Option<String>,
        /// The host.
        #[arg(long)]
        host: Option<String>,
        /// `on`, `off`, or `inherit` (follow the owner, or the installation's SESSION_RECORDING);
        /// without it the current setting is shown.
        #[arg(value_parser = ["on", "off", "inherit"])]
        recording: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum GatewaysCmd {
    /// List SSH gateways.
    List {
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// The host: its id, a unique prefix of its id or short id, or its name; may be left out when
    /// you have exactly one host.
    pub host: Option<String>,
    /// Run this instead of a login shell (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ssh_takes_a_command_after_the_separator_with_or_without_a_host() {
        let cli = Cli::try_parse_from(["cloud-cli-proxy", "ssh", "abc", "--", "echo", "-n", "x"]).unwrap();
        let Command::Ssh(a) = cli.command else { panic!() };
        assert_eq!(a.host.as_deref(), Some("abc"));
        assert_eq!(a.command, ["echo", "-n", "x"]);
        let cli = Cli::try_parse_from(["cloud-cli-proxy", "ssh", "--", "uname"]).unwrap();
        let Command::Ssh(a) = cli.command else { panic!() };
        assert_eq!((a.host, a.command), (None, vec!["uname".to_owned()]));
    }

    #[test]
    fn waiting_is_the_default() {
        let cli = Cli::try_parse_from(["cloud-cli-proxy", "hosts", "start", "h"]).unwrap();
        let Command::Hosts(HostsCmd::Start { wait, .. }) = cli.command else {
            panic!()
        };
        assert!(wait.wait());
        let cli =
            Cli::try_parse_from(["cloud-cli-proxy", "--json", "hosts", "stop", "h", "--no-wait"]).unwrap();
        let Command::Hosts(HostsCmd::Stop { wait, .. }) = cli.command else {
            panic!()
        };
        assert!(!wait.wait() && cli.json);
    }
}
