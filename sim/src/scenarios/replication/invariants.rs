//! What must hold of the accounts after a replication run
//! ([`check_accounts`]), on the healed, converged cluster. The logs
//! themselves are checked between steps by
//! [`crate::checkers::replica_log`].

use crate::clients::account::{AccountRecord, TryResult};
use crate::server_host::View;
use ferry_core::accounts::password;
use ferry_core::accounts::username;
use ferry_core::client::{ClientError, Peer};
use ferry_core::refusal::Refusal;
use ferry_core::server::{OpError, Response};
use std::collections::BTreeMap;
use std::time::Duration;

/// The login limiter's rule (docs/security.md, "Passwords"): no try for a
/// name waits before this many failures for it, counted on any server.
const LIMITER_FAILURES: usize = ferry_core::accounts::limiter::SOURCE_FREE as usize;

/// The account checks of the healed, converged cluster, on every server:
///
/// - every `Registered { user_id }` a client got is there, with that id and
///   that client's password (no acknowledged registration is lost);
/// - each username is registered at most once, and at most one client was
///   told `Registered` for it;
/// - a client that got `LoggedIn` logged into its own registration: the name
///   is registered, with the id it was told and its password; its token
///   names it and expires 24 h after a time within the run;
/// - a login on the server that just answered `Registered` succeeds (a
///   server answers only once it has applied the registration); with
///   `strict_reads`, a login anywhere after `Registered` must succeed;
/// - a login refused as rate-limited follows 3 logins for that name, on
///   any server, that may have failed (answered "invalid username or
///   password", or not answered at all: a failure is counted once applied,
///   which a client that gave up does not hear of); clients that lost a
///   name try their own passwords on it;
/// - every client finished, with errors that faults explain; the late
///   client of the healed cluster registered and logged in.
pub fn check_accounts(
    servers: &[View<'_>],
    records: &[AccountRecord],
    epoch_secs: u64,
    run_secs: u64,
    strict_reads: bool,
) -> Vec<String> {
    let mut v = Vec::new();
    for s in servers {
        let state = s.server.replica().state();
        let mut names = BTreeMap::new();
        for u in state.users() {
            if let Some(other) = names.insert(u.name.clone(), u.id) {
                v.push(format!(
                    "server{} holds username {} twice (users {other} and {})",
                    s.id, u.name, u.id
                ));
            }
            if state.user_by_name(&u.name).map(|x| x.id) != Some(u.id) {
                v.push(format!(
                    "server{}'s name index does not lead to user {} ({})",
                    s.id, u.id, u.name
                ));
            }
        }
    }
    // Logins that may have failed, per name, when they started: for the
    // login limiter's rule.
    let mut failed_logins: Vec<(String, Duration)> = Vec::new();
    for r in records {
        let Ok(name) = username::normalize(&r.plan.username) else {
            continue;
        };
        for t in &r.login {
            let may_have_failed = match &t.result {
                TryResult::Answer(Response::LoggedIn { .. })
                | TryResult::Answer(Response::Failed(OpError::RateLimited { .. }))
                | TryResult::NoSession(_) => false,
                _ => t.server.is_some() || t.result == TryResult::Lost,
            };
            if may_have_failed {
                failed_logins.push((name.clone(), t.started));
            }
        }
    }
    let mut told: BTreeMap<String, &str> = BTreeMap::new();
    for r in records {
        let p = &r.plan;
        let Ok(name) = username::normalize(&p.username) else {
            v.push(format!(
                "{}: the plan's username {} is invalid",
                p.name, p.username
            ));
            continue;
        };
        if !r.finished {
            v.push(format!("{} never finished", p.name));
        }
        if let Some(id) = r.registered() {
            if let Some(other) = told.insert(name.clone(), &p.name) {
                v.push(format!(
                    "{other} and {} were both told they registered {name}",
                    p.name
                ));
            }
            for s in servers {
                match s.server.replica().state().user_by_name(&name) {
                    None => v.push(format!(
                        "{} was told it registered {name} as user {id}, but server{} does not know {name}",
                        p.name, s.id
                    )),
                    Some(u) if u.id != id => v.push(format!(
                        "{} was told it registered {name} as user {id}, but server{} holds it as user {}",
                        p.name, s.id, u.id
                    )),
                    Some(u) if !password::verify(&u.password, &p.password) => v.push(format!(
                        "{} was told it registered {name} as user {id}, but server{} holds another password for it",
                        p.name, s.id
                    )),
                    Some(_) => {}
                }
            }
        }
        if let Some((id, token_name, expires)) = r.logged_in() {
            for s in servers {
                match s.server.replica().state().user_by_name(&name) {
                    Some(u) if u.id == id && password::verify(&u.password, &p.password) => {}
                    other => v.push(format!(
                        "{} logged in as {name} (user {id}), but server{} holds {:?}",
                        p.name,
                        s.id,
                        other.map(|u| (u.id, password::verify(&u.password, &p.password)))
                    )),
                }
            }
            if token_name != name {
                v.push(format!("{}'s token names {token_name}, not {name}", p.name));
            }
            let day = 24 * 3600;
            let (lo, hi) = (epoch_secs + day, epoch_secs + run_secs + day);
            if !(lo..=hi).contains(&expires) {
                v.push(format!(
                    "{}'s token expires at {expires}, outside {lo}..={hi}: the servers' clock is not the Unix time",
                    p.name
                ));
            }
        }
        // Read your writes on the server that answered.
        let registered_on = r.register.iter().find_map(|t| match t.result {
            TryResult::Answer(Response::Registered { .. }) => t.server,
            _ => None,
        });
        if let (Some(on), Some(first)) = (registered_on, r.login.first()) {
            if first.server == Some(on)
                && matches!(first.result, TryResult::Answer(Response::Failed(_)))
                && p.login == crate::clients::account::Login::SameSession
            {
                v.push(format!(
                    "{} registered on server{on}, then failed to log in on the same session: {}",
                    p.name, first.result
                ));
            }
        }
        if strict_reads && r.registered().is_some() {
            for t in &r.login {
                if t.result == TryResult::Answer(Response::Failed(OpError::BadCredentials)) {
                    let on = t.server.map_or("?".into(), |s| s.to_string());
                    v.push(format!(
                        "{} was told it registered {name}, then server{on} refused its login at {:?}: a stale read",
                        p.name, t.at
                    ));
                }
            }
        }
        for t in r.register.iter().chain(&r.login) {
            if let Some(why) = unexpected(&t.result) {
                v.push(format!("{}: {why}", p.name));
            }
            // The limiter holds a name only after 3 failures for it,
            // counted through any server.
            if let (Some(s), TryResult::Answer(Response::Failed(OpError::RateLimited { .. }))) =
                (t.server, &t.result)
            {
                let before = failed_logins
                    .iter()
                    .filter(|(fname, started)| *fname == name && *started <= t.at)
                    .count();
                if before < LIMITER_FAILURES {
                    v.push(format!(
                        "{}: server{s} refused a login for {name} as rate-limited after {before} failed login(s)",
                        p.name
                    ));
                }
            }
        }
        if p.must_succeed && (r.registered().is_none() || r.logged_in().is_none()) {
            let tries: Vec<String> = r
                .register
                .iter()
                .chain(&r.login)
                .map(|t| t.result.to_string())
                .collect();
            v.push(format!(
                "{} (liveness probe of the healed cluster) did not register and log in: {}",
                p.name,
                tries.join("; ")
            ));
        }
    }
    v
}

/// Why a try's end is one that honest nodes never cause, if it is.
fn unexpected(t: &TryResult) -> Option<String> {
    let client_error = |e: &ClientError| match e {
        ClientError::NoServer(_) => None,
        ClientError::Unreachable { peer, .. } | ClientError::Timeout { peer, .. }
            if *peer == Peer::Server =>
        {
            None
        }
        ClientError::Refused {
            by: Peer::Server,
            reason:
                Refusal::CodeExpired
                | Refusal::CodeUnknown
                | Refusal::Timeout { .. }
                | Refusal::ServerFull,
        } => None,
        other => Some(format!("an error honest nodes never cause: {other}")),
    };
    match t {
        TryResult::NoSession(e) | TryResult::Failed(e) => client_error(e),
        TryResult::Answer(Response::Failed(e)) => match e {
            // RateLimited is checked against the limiter's rule separately.
            OpError::UsernameTaken
            | OpError::BadCredentials
            | OpError::Unavailable { .. }
            | OpError::RateLimited { .. } => None,
            other => Some(format!("an answer honest clients never get: {other}")),
        },
        TryResult::Answer(_) | TryResult::Lost => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::replica_log::testing::{register, server, view, EPOCH};
    use crate::clients::account::{AccountPlan, Login, Try};
    use ferry_core::auth::ClusterSecret;

    fn record(name: &str, username: &str, password: &str) -> AccountRecord {
        let mut r = AccountRecord::new(AccountPlan {
            name: name.into(),
            username: username.into(),
            password: password.into(),
            start: Duration::ZERO,
            login: Login::No,
            attempts: 3,
            must_succeed: false,
        });
        r.finished = true;
        r
    }

    fn answered(server: u32, response: Response) -> Try {
        Try {
            started: Duration::from_millis(500),
            at: Duration::from_secs(1),
            server: Some(server),
            result: TryResult::Answer(response),
        }
    }

    #[test]
    fn lost_and_double_registrations_and_foreign_logins_are_caught() {
        let log = [register(1, "alice", "pw-alice1")];
        let s = server(1, &log, 1);
        let views = [view(1, 1, &s)];
        let mut ok = record("client1", "Alice", "pw-alice1");
        ok.register
            .push(answered(1, Response::Registered { user_id: 1 }));
        assert_eq!(
            check_accounts(&views, &[ok.clone()], EPOCH, 60, false),
            Vec::<String>::new()
        );
        // Lost: told Registered, but no server knows the name.
        let mut lost = record("client2", "bob", "pw-bob-12");
        lost.register
            .push(answered(1, Response::Registered { user_id: 2 }));
        // Twice: a second client told it registered alice.
        let mut twice = record("client3", "alice", "pw-other-3");
        twice
            .register
            .push(answered(1, Response::Registered { user_id: 1 }));
        let v = check_accounts(&views, &[ok.clone(), lost, twice], EPOCH, 60, false);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v[0].contains("does not know bob"), "{v:?}");
        assert!(
            v[1].contains("were both told they registered alice"),
            "{v:?}"
        );
        assert!(v[2].contains("another password"), "{v:?}");
        // A login into someone else's account.
        let mut foreign = record("client4", "alice", "pw-other-4");
        let secret = ClusterSecret::from_bytes(b"ferry-sim-cluster-secret").unwrap();
        let token = ferry_core::accounts::token::SessionToken::issue(
            &secret,
            1,
            "alice".into(),
            EPOCH + 24 * 3600 + 5,
            [0; 16],
        );
        foreign
            .login
            .push(answered(1, Response::LoggedIn { user_id: 1, token }));
        let v = check_accounts(&views, &[ok, foreign], EPOCH, 60, false);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("client4 logged in as alice"), "{v:?}");
    }

    #[test]
    fn rate_limiting_must_follow_three_failed_logins() {
        let s = server(1, &[register(1, "alice", "pw-alice1")], 1);
        let views = [view(1, 1, &s)];
        let limited = |at| Try {
            started: at,
            at,
            server: Some(1),
            result: TryResult::Answer(Response::Failed(OpError::RateLimited {
                retry_after_secs: 30,
            })),
        };
        let mut early = record("client1", "alice", "pw-other-1");
        early.login.push(limited(Duration::from_secs(1)));
        let v = check_accounts(&views, &[early], EPOCH, 60, false);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("after 0 failed login(s)"), "{v:?}");
        let mut records: Vec<AccountRecord> = (0..3)
            .map(|i| {
                let mut r = record(&format!("client{i}"), "Alice", &format!("pw-other-{i}"));
                let mut t = answered(1, Response::Failed(OpError::BadCredentials));
                t.started = Duration::from_secs(2);
                t.at = Duration::from_secs(2);
                r.login.push(t);
                r
            })
            .collect();
        let mut fourth = record("client9", "alice", "pw-other-9");
        fourth.login.push(limited(Duration::from_secs(3)));
        records.push(fourth);
        assert_eq!(
            check_accounts(&views, &records, EPOCH, 60, false),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_stale_login_is_a_violation_only_with_strict_reads() {
        let s = server(1, &[register(1, "alice", "pw-alice1")], 1);
        let views = [view(1, 1, &s)];
        let mut r = record("client1", "alice", "pw-alice1");
        r.register
            .push(answered(2, Response::Registered { user_id: 1 }));
        r.login
            .push(answered(3, Response::Failed(OpError::BadCredentials)));
        assert!(check_accounts(&views, &[r.clone()], EPOCH, 60, false).is_empty());
        let v = check_accounts(&views, &[r], EPOCH, 60, true);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("stale read"), "{v:?}");
    }
}
