//! `ferry status` through an in-memory cluster: every server reports, a
//! silent or crashed one shows as not answering without holding the
//! answer past the patience, and a login adds its user's own files.

use super::status::{ClusterStatus, STATUS_PATIENCE};
use super::user_files_tests::{content, login_token, proven_session, stored};
use crate::host::mem_disk::MEM_DISK_SIZE;
use crate::replication::status::Role;
use crate::server::{Request, SessionMsg};
use crate::testkit::cluster::Cluster;
use std::time::Duration;

fn status(
    c: &mut Cluster,
    ix: usize,
    token: Option<crate::accounts::token::SessionToken>,
) -> ClusterStatus {
    let s = c.open_session(ix);
    let got = c.request(ix, s, &Request::Status { token });
    match &got[..] {
        [SessionMsg::Status(st)] => st.clone(),
        other => panic!("a status, got {other:?}"),
    }
}

fn roles(st: &ClusterStatus) -> Vec<Option<Role>> {
    st.servers
        .iter()
        .map(|s| s.report.as_ref().map(|r| r.role))
        .collect()
}

#[test]
fn every_server_reports_and_a_login_adds_its_files() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let token = login_token(&mut c, "alice");
    let s = proven_session(&mut c, 1, &token, None);
    let (a, b) = (content(1000, 1), content(2345, 2));
    assert!(stored(&c.upload(1, s, "a", &a, false)));
    assert!(stored(&c.upload(1, s, "b", &b, false)));
    c.run_for(Duration::from_millis(500));

    let st = status(&mut c, 1, Some(token));
    assert_eq!(st.answered_by, 2);
    let r = [Role::Master, Role::Follower, Role::Follower].map(Some);
    assert_eq!(roles(&st), r);
    let commits: Vec<u64> = (st.servers.iter())
        .filter_map(|s| s.report.as_ref().map(|r| r.commit))
        .collect();
    assert_eq!(commits.len(), 3);
    assert!(
        commits.iter().all(|c| *c == commits[0] && *c > 0),
        "{commits:?}"
    );
    assert!(st.servers.iter().all(|s| s.behind == Some(0)));
    for s in &st.servers {
        let free = s.report.as_ref().and_then(|r| r.free_disk);
        // Every server holds both files' content.
        assert_eq!(free, Some(MEM_DISK_SIZE - 3345), "server {}", s.id);
    }
    let me = st.user.expect("the login's files");
    assert_eq!(
        (me.username.as_str(), me.files, me.bytes),
        ("alice", 2, 3345)
    );
    // The status question's own session counts, and the uploader's.
    let sessions = st.servers[1].report.as_ref().map(|r| r.sessions);
    assert_eq!(sessions, Some(2));

    // Without a login: the cluster all the same.
    assert_eq!(status(&mut c, 0, None).user, None);
}

#[test]
fn a_crashed_server_is_not_waited_for() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    c.crash(2);
    c.run_for(Duration::from_millis(10));
    // Answered within the request's 50 ms: its link is down, so it was
    // never asked.
    let st = status(&mut c, 1, None);
    assert_eq!(roles(&st), [Some(Role::Master), Some(Role::Follower), None]);
    assert_eq!(st.servers[2].behind, None);
}

#[test]
fn a_silent_server_is_given_up_on_after_the_patience() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    // Silent, its link still up as far as server 1 can tell.
    c.partition(0, 2);
    let s = c.open_session(0);
    let got = c.request(0, s, &Request::Status { token: None });
    assert_eq!(got, [], "server 3 is still waited for");
    c.run_for(STATUS_PATIENCE);
    let got = c.received(0, s);
    let [SessionMsg::Status(st)] = &got[..] else {
        panic!("a status after the patience, got {got:?}");
    };
    assert_eq!(roles(st), [Some(Role::Master), Some(Role::Follower), None]);
    // The session goes on.
    assert!(matches!(
        &c.request(0, s, &Request::Status { token: None })[..],
        [] | [SessionMsg::Status(_)]
    ));
}
