//! `cloud-cli-proxy-fake-wg --listen ADDR:PORT --tun NAME --address A.B.C.D/LEN`: the fake
//! internet's fast WireGuard server (`cloud_cli_proxy_tests::fakenet`), the agent's
//! [`agent::egress_runtime::wireguard::responder`] on the same batched data path as the tunnel process.
//! Runs in the server's network namespace; the fake internet's alternative to wireguard-go.
//!
//! Driven over stdin, one line at a time, each answered on stdout once it took effect:
//!
//! ```text
//! private-key KEY            → ready        (first: creates the tun device and binds the socket)
//! peer KEY PSK|- CIDR        → ok           (as `wg addconf` with one [Peer]; PSK `-`: none)
//! ```
//!
//! Keys are base64, as `wg` prints them; keys stay off the command line, where `ps` would show
//! them. A line it cannot take ends it with the reason on stderr (exit 2); so does the end of
//! stdin (exit 0): the process that started it is gone. A failure of the data path exits 1.
#![allow(clippy::print_stdout, reason = "a test program: its answers go on stdout")]

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddrV4;

use agent::egress_runtime::wireguard::Key;
use agent::egress_runtime::wireguard::responder::{Responder, ResponderConfig};
use agent::firewall::Ipv4Cidr;
use anyhow::{Context as _, bail};

struct Args {
    listen: SocketAddrV4,
    tun: String,
    address: Ipv4Cidr,
    /// The address itself, not its network.
    host: std::net::Ipv4Addr,
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let usage = "usage: cloud-cli-proxy-fake-wg --listen ADDR:PORT --tun NAME --address A.B.C.D/LEN";
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .with_context(|| format!("{flag} is missing; {usage}"))
    };
    if args.len() != 6 {
        bail!("{usage}");
    }
    let address = value("--address")?;
    let host = address
        .split_once('/')
        .and_then(|(a, _)| a.parse().ok())
        .with_context(|| format!("--address `{address}` is not A.B.C.D/LEN"))?;
    Ok(Args {
        listen: value("--listen")?.parse().context("--listen ADDR:PORT")?,
        tun: value("--tun")?.clone(),
        address: address
            .parse()
            .map_err(|_| anyhow::anyhow!("--address `{address}`"))?,
        host,
    })
}

/// One `peer` line: the key, the preshared key if any, the CIDR.
fn peer_line(rest: &str) -> anyhow::Result<(Key, Option<Key>, Ipv4Cidr)> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    let [key, psk, cidr] = words[..] else {
        bail!("`peer` wants KEY PSK|- CIDR");
    };
    let key = Key::parse("peer key", key)?;
    let psk = (psk != "-")
        .then(|| Key::parse("preshared key", psk))
        .transpose()?;
    let cidr = cidr
        .parse::<Ipv4Cidr>()
        .map_err(|_| anyhow::anyhow!("`{cidr}` is not an IPv4 CIDR"))?;
    Ok((key, psk, cidr))
}

fn answer(word: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{word}")?;
    out.flush()?;
    Ok(())
}

fn serve(args: &Args) -> anyhow::Result<()> {
    let mut lines = std::io::stdin().lock().lines();
    let first = lines.next().transpose()?.unwrap_or_default();
    let key = first
        .strip_prefix("private-key ")
        .context("the first line must be `private-key KEY`")?;
    let responder = Responder::start(&ResponderConfig {
        private_key: Key::parse("private key", key)?,
        listen: args.listen,
        tun_name: args.tun.clone(),
        address: args.host,
        prefix: args.address.prefix(),
    })?;
    eprintln!(
        "fake-wg: listening on {}, tun {} ({}), offloads {}",
        args.listen,
        args.tun,
        args.address,
        if responder.offload() { "on" } else { "off" }
    );
    let peers = responder.peers();
    std::thread::spawn(move || {
        let e = responder.run();
        eprintln!("fake-wg: {e}");
        std::process::exit(1);
    });
    answer("ready")?;
    for line in lines {
        let line = line?;
        let rest = line
            .strip_prefix("peer ")
            .with_context(|| format!("unknown line `{line}`"))?;
        let (key, psk, cidr) = peer_line(rest)?;
        peers.add(&key, psk.as_ref(), cidr);
        answer("ok")?;
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse(&args).and_then(|args| serve(&args));
    if let Err(e) = result {
        eprintln!("fake-wg: {e:#}");
        std::process::exit(2);
    }
}
