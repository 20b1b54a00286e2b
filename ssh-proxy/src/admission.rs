//! How many connections the gateway holds that have not logged in yet, per source and in all, and
//! how many channels one logged-in connection may have open. Each not-yet-authenticated connection
//! costs a socket, a task and its buffers while giving nothing back, so they are capped in the
//! spirit of OpenSSH's `MaxStartups`/`PerSourceMaxStartups`: over a cap the new connection is
//! closed at once; one that logs in stops counting.
//!
//! The counting is plain data ([`Unauthenticated`], [`channel_allowed`]) so that it is tested by
//! tables; [`Gate`] and [`ChannelSlots`] share it between the worker threads and give the counts
//! back when a connection or channel goes away.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Caps on connections that have not logged in yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub per_source: usize,
    pub total: usize,
}

/// Why a new connection is turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source already holds `per_source` connections that have not logged in.
    SourceFull,
    /// The gateway already holds `total` connections that have not logged in.
    TotalFull,
}

/// What connections count against: an IPv4 address, or an IPv6 /64, which one subscriber usually
/// holds whole (so a per-address count would let them open billions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Self(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

/// The connections not logged in yet, by source.
#[derive(Debug, Default)]
pub struct Unauthenticated {
    by_source: HashMap<Source, usize>,
    total: usize,
}

impl Unauthenticated {
    /// Counts a new connection from `ip`, or says why it may not be held.
    pub fn admit(&mut self, ip: IpAddr, caps: Caps) -> Result<(), Refusal> {
        let source = Source::of(ip);
        let held = self.by_source.get(&source).copied().unwrap_or(0);
        if held >= caps.per_source {
            return Err(Refusal::SourceFull);
        }
        if self.total >= caps.total {
            return Err(Refusal::TotalFull);
        }
        self.by_source.insert(source, held + 1);
        self.total += 1;
        Ok(())
    }

    /// A connection from `ip` counted by [`Unauthenticated::admit`] logged in or went away.
    pub fn release(&mut self, ip: IpAddr) {
        let source = Source::of(ip);
        if let Some(held) = self.by_source.get_mut(&source) {
            *held -= 1;
            if *held == 0 {
                self.by_source.remove(&source);
            }
            self.total = self.total.saturating_sub(1);
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn from_source(&self, ip: IpAddr) -> usize {
        self.by_source.get(&Source::of(ip)).copied().unwrap_or(0)
    }
}

/// [`Unauthenticated`] shared by every worker.
#[derive(Debug)]
pub struct Gate {
    caps: Caps,
    held: Mutex<Unauthenticated>,
}

impl Gate {
    pub fn new(caps: Caps) -> Arc<Self> {
        Arc::new(Self {
            caps,
            held: Mutex::new(Unauthenticated::default()),
        })
    }

    /// A ticket that counts the connection from `ip` until it logs in or is dropped.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refusal> {
        self.lock().admit(ip, self.caps)?;
        Ok(Ticket {
            gate: Some(self.clone()),
            ip,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Unauthenticated> {
        // The counts stay consistent whatever panicked while holding the lock: every change is
        // one step.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One connection counted as not logged in.
#[derive(Debug)]
pub struct Ticket {
    gate: Option<Arc<Gate>>,
    ip: IpAddr,
}

impl Ticket {
    /// The connection logged in: it no longer counts.
    pub fn authenticated(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.lock().release(self.ip);
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.gate.is_none()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.authenticated();
    }
}

/// Whether a connection with `open` channels may open another.
pub fn channel_allowed(open: usize, max: usize) -> bool {
    open < max
}

/// The channels of one client connection (its own and those the host opens towards it), each
/// holding up to two relay queues.
#[derive(Debug, Clone)]
pub struct ChannelSlots {
    open: Arc<AtomicUsize>,
    max: usize,
}

impl ChannelSlots {
    pub fn new(max: usize) -> Self {
        Self {
            open: Arc::default(),
            max,
        }
    }

    /// A slot for one more channel, given back when dropped; `None` when all are taken.
    pub fn take(&self) -> Option<ChannelSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                channel_allowed(open, self.max).then_some(open + 1)
            })
            .ok()
            .map(|_| ChannelSlot {
                open: self.open.clone(),
            })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One open channel's place in its connection's [`ChannelSlots`].
#[derive(Debug)]
pub struct ChannelSlot {
    open: Arc<AtomicUsize>,
}

impl Drop for ChannelSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const CAPS: Caps = Caps {
        per_source: 2,
        total: 4,
    };

    /// Each row: connections arriving in order (`+addr`) or going away (`-addr`), and what the
    /// last arrival gets.
    #[test]
    fn admissions() {
        let rows: &[(&[&str], Result<(), Refusal>)] = &[
            (&["+10.0.0.1"], Ok(())),
            (&["+10.0.0.1", "+10.0.0.1"], Ok(())),
            (&["+10.0.0.1", "+10.0.0.1", "+10.0.0.1"], Err(Refusal::SourceFull)),
            (&["+10.0.0.1", "+10.0.0.1", "-10.0.0.1", "+10.0.0.1"], Ok(())),
            (&["+10.0.0.1", "+10.0.0.1", "+10.0.0.2"], Ok(())),
            (
                &["+10.0.0.1", "+10.0.0.2", "+10.0.0.3", "+10.0.0.4", "+10.0.0.5"],
                Err(Refusal::TotalFull),
            ),
            (
                &[
                    "+10.0.0.1",
                    "+10.0.0.2",
                    "+10.0.0.3",
                    "+10.0.0.4",
                    "-10.0.0.2",
                    "+10.0.0.5",
                ],
                Ok(()),
            ),
            // A full source is refused as such even when the gateway is full too.
            (
                &["+10.0.0.1", "+10.0.0.1", "+10.0.0.3", "+10.0.0.4", "+10.0.0.1"],
                Err(Refusal::SourceFull),
            ),
            // One IPv6 /64 is one source.
            (
                &["+2001:db8::1", "+2001:db8::2", "+2001:db8::ffff:1"],
                Err(Refusal::SourceFull),
            ),
            (&["+2001:db8::1", "+2001:db8::2", "+2001:db8:0:1::1"], Ok(())),
            // An IPv4-mapped address is the IPv4 address.
            (
                &["+10.0.0.1", "+10.0.0.1", "+::ffff:10.0.0.1"],
                Err(Refusal::SourceFull),
            ),
            // Releasing what was never admitted changes nothing.
            (
                &[
                    "-10.0.0.9",
                    "+10.0.0.1",
                    "+10.0.0.2",
                    "+10.0.0.3",
                    "+10.0.0.4",
                    "+10.0.0.5",
                ],
                Err(Refusal::TotalFull),
            ),
        ];
        for (steps, want) in rows {
            let mut held = Unauthenticated::default();
            let mut last = None;
            for step in *steps {
                let (op, addr) = step.split_at(1);
                if op == "+" {
                    last = Some(held.admit(ip(addr), CAPS));
                } else {
                    held.release(ip(addr));
                }
            }
            assert_eq!(last, Some(*want), "{steps:?}");
        }
    }

    #[test]
    fn a_ticket_counts_until_login_or_drop() {
        let gate = Gate::new(Caps {
            per_source: 1,
            total: 10,
        });
        let a = ip("10.0.0.1");
        let mut first = gate.enter(a).unwrap();
        assert_eq!(gate.enter(a).unwrap_err(), Refusal::SourceFull);
        first.authenticated();
        assert!(first.is_authenticated());
        let second = gate.enter(a).unwrap();
        // Logged in once, the first ticket gives nothing back a second time when dropped.
        drop(first);
        assert_eq!(gate.lock().from_source(a), 1);
        drop(second);
        assert_eq!(gate.lock().total(), 0);
    }

    #[test]
    fn channel_caps() {
        for (open, max, want) in [
            (0, 1, true),
            (1, 1, false),
            (31, 32, true),
            (32, 32, false),
            (0, 0, false),
        ] {
            assert_eq!(channel_allowed(open, max), want, "{open} of {max}");
        }
        let slots = ChannelSlots::new(2);
        let a = slots.take().unwrap();
        let b = slots.take().unwrap();
        assert!(slots.take().is_none());
        drop(a);
        let c = slots.take().unwrap();
        assert_eq!(slots.open(), 2);
        drop((b, c));
        assert_eq!(slots.open(), 0);
    }
}
