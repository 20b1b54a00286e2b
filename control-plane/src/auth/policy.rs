//! The sign-in policy: may this proof open this account, and this host? Decided here without I/O.
//! Every way in (API, dashboard, bootstrap and entry scripts, SSH by password or key, the
//! dashboard's terminal) gathers its facts — the account, what was proven, the host asked for, the
//! limiter's verdict — and `auth::login` carries the decision out (hashing, lookups, audit).

use std::time::Duration;

use crate::db::UtcTime;
use crate::db::users::Status;

/// A way into the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// `/v1/auth/login` and `/v1/admin/login`: a bearer token.
    Api,
    /// `/v1/auth/session`: the dashboard's cookie.
    Dashboard,
    /// `/v1/bootstrap/sessions`: the bootstrap script, by username and password.
    Bootstrap,
    /// `/v1/entry/{short_id}/auth`: an entry link, by its owner's password.
    Entry,
    /// The SSH gateway, by password (the account's, the host's own, or a single-use secret).
    SshPassword,
    /// The SSH gateway, by one of the account's public keys.
    SshKey,
    /// The dashboard's terminal, logging in through the gateway with its single-use secret.
    WebTerminal,
}

impl Way {
    pub const ALL: [Self; 7] = [
        Self::Api,
        Self::Dashboard,
        Self::Bootstrap,
        Self::Entry,
        Self::SshPassword,
        Self::SshKey,
        Self::WebTerminal,
    ];

    /// The way's name in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Dashboard => "dashboard",
            Self::Bootstrap => "bootstrap",
            Self::Entry => "entry",
            Self::SshPassword => "ssh_password",
            Self::SshKey => "ssh_key",
            Self::WebTerminal => "web_terminal",
        }
    }

    /// Whether an enrolled second factor is asked for: on the ways that open the account itself
    /// (its tokens, keys, hosts and other users). The others open one host's shell only, which the
    /// host's own SSH password opens as well; the terminal's secret comes from a session that
    /// already passed the second factor.
    pub fn asks_second_factor(self) -> bool {
        matches!(self, Self::Api | Self::Dashboard)
    }
}

/// What signing in needs to know of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub status: Status,
    pub expires_at: Option<UtcTime>,
    /// A second factor (TOTP) is enrolled.
    pub second_factor: bool,
}

/// What the attempt proved, checked outside this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Nothing was checked: the limiter refused first.
    Unchecked,
    /// Nothing was checked: every password-hashing slot stayed taken for the queue's deadline.
    Busy { retry_after: Duration },
    /// A password: right for the account (or, over SSH, the host's own password) or not.
    Password(bool),
    /// A single-use secret (the scripts' or the terminal's): redeemed now, or not.
    Secret(bool),
    /// A public key: one of the account's, or not.
    Key(bool),
}

/// The second factor, where one is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    /// None given.
    Missing,
    /// A current code or an unused recovery code.
    Valid,
    /// A wrong, stale or replayed code.
    Invalid,
}

/// The host a login asks for, as found for the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPick {
    /// The way opens the account, not a host.
    NotAsked,
    Found,
    /// The account has no host.
    NoHost,
    /// The short id named is none of the account's hosts.
    NoSuchHost,
    /// No short id, and the account has more than one host.
    Ambiguous,
}

/// Everything the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub way: Way,
    /// `None`: no such account (or, for an entry link, no such link).
    pub account: Option<Account>,
    pub proof: Proof,
    pub second_factor: SecondFactor,
    pub host: HostPick,
    /// The limiter's verdict, taken before anything was checked: `Some(retry_after)` when refused.
    pub limited: Option<Duration>,
    pub now: UtcTime,
}

/// Why an attempt was refused. Recorded in its event; what the client learns is the way's
/// business (`auth::login`), and never which accounts exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    RateLimited {
        retry_after: Duration,
    },
    Busy {
        retry_after: Duration,
    },
    /// An SSH login name that is not `user` or `user+shortid`.
    BadLogin,
    UnknownUser,
    UnknownLink,
    WrongPassword,
    WrongSecret,
    UnknownKey,
    SecondFactorRequired,
    SecondFactorInvalid,
    Disabled,
    Expired,
    NoHost,
    NoSuchHost,
    AmbiguousHost,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::Busy { .. } => "busy",
            Self::BadLogin => "bad_login",
            Self::UnknownUser => "unknown_user",
            Self::UnknownLink => "unknown_link",
            Self::WrongPassword => "wrong_password",
            Self::WrongSecret => "wrong_secret",
            Self::UnknownKey => "unknown_key",
            Self::SecondFactorRequired => "totp_required",
            Self::SecondFactorInvalid => "totp_invalid",
            Self::Disabled => "disabled",
            Self::Expired => "expired",
            Self::NoHost => "no_host",
            Self::NoSuchHost => "no_such_host",
            Self::AmbiguousHost => "ambiguous_host",
        }
    }

    /// Whether the attempt stays counted against the limits: a proof that failed is a guess;
    /// anything refused after the proof was right (or before anything was checked) is not.
    pub fn is_guess(self) -> bool {
        matches!(
            self,
            Self::UnknownUser
                | Self::UnknownLink
                | Self::WrongPassword
                | Self::WrongSecret
                | Self::SecondFactorInvalid
        )
    }

    /// How long to wait before trying again, for the refusals that are about load, not proof.
    pub fn retry_after(self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } | Self::Busy { retry_after } => Some(retry_after),
            _ => None,
        }
    }
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Grant,
    Refuse(Refusal),
}

/// Decides an attempt. The order is the policy: limits first (nothing is checked past them), then
/// the proof (so nothing about the account leaks to someone who cannot prove it), then the second
/// factor, then the account's state, then the host.
pub fn decide(attempt: &Attempt) -> Decision {
    match refusal(attempt) {
        Some(r) => Decision::Refuse(r),
        None => Decision::Grant,
    }
}

fn refusal(a: &Attempt) -> Option<Refusal> {
    if let Some(retry_after) = a.limited {
        return Some(Refusal::RateLimited { retry_after });
    }
    let proven = match a.proof {
        Proof::Unchecked => {
            return Some(Refusal::RateLimited {
                retry_after: Duration::from_secs(1),
            });
        }
        Proof::Busy { retry_after } => return Some(Refusal::Busy { retry_after }),
        Proof::Password(ok) | Proof::Secret(ok) | Proof::Key(ok) => ok,
    };
    let Some(account) = a.account else {
        return Some(if a.way == Way::Entry {
            Refusal::UnknownLink
        } else {
            Refusal::UnknownUser
        });
    };
    if !proven {
        return Some(match a.proof {
            Proof::Key(_) => Refusal::UnknownKey,
            Proof::Secret(_) => Refusal::WrongSecret,
            _ => Refusal::WrongPassword,
        });
    }
    if a.way.asks_second_factor() && account.second_factor {
        match a.second_factor {
            SecondFactor::Valid => {}
            SecondFactor::Missing => return Some(Refusal::SecondFactorRequired),
            SecondFactor::Invalid => return Some(Refusal::SecondFactorInvalid),
        }
    }
    if account.status != Status::Active {
        return Some(Refusal::Disabled);
    }
    if account.expires_at.is_some_and(|e| e <= a.now) {
        return Some(Refusal::Expired);
    }
    match a.host {
        HostPick::NotAsked | HostPick::Found => None,
        HostPick::NoHost => Some(Refusal::NoHost),
        HostPick::NoSuchHost => Some(Refusal::NoSuchHost),
        HostPick::Ambiguous => Some(Refusal::AmbiguousHost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The account states the tables run through.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum State {
        Active,
        Disabled,
        Expired,
        Deleted,
        /// The password was changed: the old one is now a wrong proof, the new one a right one.
        PasswordChangedOld,
        PasswordChangedNew,
        SecondFactorEnrolled,
        RateLimited,
    }

    const STATES: [State; 8] = [
        State::Active,
        State::Disabled,
        State::Expired,
        State::Deleted,
        State::PasswordChangedOld,
        State::PasswordChangedNew,
        State::SecondFactorEnrolled,
        State::RateLimited,
    ];

    fn now() -> UtcTime {
        UtcTime::from(chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default())
    }

    fn attempt(way: Way, state: State) -> Attempt {
        let account = Account {
            status: if state == State::Disabled {
                Status::Disabled
            } else {
                Status::Active
            },
            expires_at: (state == State::Expired)
                .then(|| UtcTime::from(now().0 - chrono::Duration::hours(1))),
            second_factor: state == State::SecondFactorEnrolled,
        };
        let right = state != State::PasswordChangedOld;
        let proof = match way {
            Way::SshKey => Proof::Key(right),
            Way::WebTerminal => Proof::Secret(right),
            _ => Proof::Password(right),
        };
        let host = match way {
            Way::Api | Way::Dashboard => HostPick::NotAsked,
            _ => HostPick::Found,
        };
        Attempt {
            way,
            account: (state != State::Deleted).then_some(account),
            proof: if state == State::RateLimited {
                Proof::Unchecked
            } else {
                proof
            },
            second_factor: SecondFactor::Missing,
            host,
            limited: (state == State::RateLimited).then(|| Duration::from_secs(42)),
            now: now(),
        }
    }

    /// The expected decision of every way in every account state, written out in full.
    fn expected(way: Way, state: State) -> Decision {
        use Refusal as R;
        let refuse = Decision::Refuse;
        match state {
            State::Active | State::PasswordChangedNew => Decision::Grant,
            State::Disabled => refuse(R::Disabled),
            State::Expired => refuse(R::Expired),
            State::Deleted if way == Way::Entry => refuse(R::UnknownLink),
            State::Deleted => refuse(R::UnknownUser),
            State::PasswordChangedOld => match way {
                Way::SshKey => refuse(R::UnknownKey),
                Way::WebTerminal => refuse(R::WrongSecret),
                _ => refuse(R::WrongPassword),
            },
            State::SecondFactorEnrolled => match way {
                Way::Api | Way::Dashboard => refuse(R::SecondFactorRequired),
                _ => Decision::Grant,
            },
            State::RateLimited => refuse(R::RateLimited {
                retry_after: Duration::from_secs(42),
            }),
        }
    }

    #[test]
    fn every_way_in_every_account_state() {
        let mut rows = 0;
        for way in Way::ALL {
            for state in STATES {
                let got = decide(&attempt(way, state));
                assert_eq!(got, expected(way, state), "{way:?} × {state:?}");
                rows += 1;
            }
        }
        assert_eq!(rows, 56);
    }

    #[test]
    fn the_second_factor_once_enrolled() {
        for (given, want) in [
            (SecondFactor::Valid, Decision::Grant),
            (
                SecondFactor::Missing,
                Decision::Refuse(Refusal::SecondFactorRequired),
            ),
            (
                SecondFactor::Invalid,
                Decision::Refuse(Refusal::SecondFactorInvalid),
            ),
        ] {
            for way in [Way::Api, Way::Dashboard] {
                let mut a = attempt(way, State::SecondFactorEnrolled);
                a.second_factor = given;
                assert_eq!(decide(&a), want, "{way:?} with {given:?}");
                // A wrong password says nothing of the second factor.
                a.proof = Proof::Password(false);
                assert_eq!(decide(&a), Decision::Refuse(Refusal::WrongPassword));
            }
        }
        // Not enrolled: a code, right or wrong, is not read.
        let mut a = attempt(Way::Api, State::Active);
        a.second_factor = SecondFactor::Invalid;
        assert_eq!(decide(&a), Decision::Grant);
    }

    #[test]
    fn the_host_is_decided_last() {
        for (pick, want) in [
            (HostPick::Found, None),
            (HostPick::NoHost, Some(Refusal::NoHost)),
            (HostPick::NoSuchHost, Some(Refusal::NoSuchHost)),
            (HostPick::Ambiguous, Some(Refusal::AmbiguousHost)),
        ] {
            for way in [
                Way::Bootstrap,
                Way::Entry,
                Way::SshPassword,
                Way::SshKey,
                Way::WebTerminal,
            ] {
                let mut a = attempt(way, State::Active);
                a.host = pick;
                assert_eq!(
                    decide(&a),
                    want.map_or(Decision::Grant, Decision::Refuse),
                    "{way:?}"
                );
                // Without the proof, the host's absence is not told.
                a.proof = match a.proof {
                    Proof::Key(_) => Proof::Key(false),
                    Proof::Secret(_) => Proof::Secret(false),
                    _ => Proof::Password(false),
                };
                let Decision::Refuse(r) = decide(&a) else {
                    panic!("granted without proof: {way:?}");
                };
                assert!(!matches!(
                    r,
                    Refusal::NoHost | Refusal::NoSuchHost | Refusal::AmbiguousHost
                ));
                // Nor a disabled account's state.
                a.account = Some(Account {
                    status: Status::Disabled,
                    expires_at: None,
                    second_factor: false,
                });
                assert_ne!(decide(&a), Decision::Refuse(Refusal::Disabled));
            }
        }
    }

    #[test]
    fn load_and_limits_come_before_anything_else() {
        for way in Way::ALL {
            let mut a = attempt(way, State::Deleted);
            a.proof = Proof::Busy {
                retry_after: Duration::from_secs(2),
            };
            assert_eq!(
                decide(&a),
                Decision::Refuse(Refusal::Busy {
                    retry_after: Duration::from_secs(2)
                })
            );
            a.limited = Some(Duration::from_secs(9));
            let r = decide(&a);
            assert_eq!(
                r,
                Decision::Refuse(Refusal::RateLimited {
                    retry_after: Duration::from_secs(9)
                })
            );
        }
    }

    #[test]
    fn only_failed_proofs_stay_counted() {
        use Refusal as R;
        let guesses = [
            R::UnknownUser,
            R::UnknownLink,
            R::WrongPassword,
            R::WrongSecret,
            R::SecondFactorInvalid,
        ];
        let not = [
            R::RateLimited {
                retry_after: Duration::ZERO,
            },
            R::Busy {
                retry_after: Duration::ZERO,
            },
            R::BadLogin,
            R::UnknownKey,
            R::SecondFactorRequired,
            R::Disabled,
            R::Expired,
            R::NoHost,
            R::NoSuchHost,
            R::AmbiguousHost,
        ];
        assert!(guesses.iter().all(|r| r.is_guess()));
        assert!(not.iter().all(|r| !r.is_guess()));
    }
}
