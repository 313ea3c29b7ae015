//! The cluster's authority with real processes: `ferry ca` makes one and
//! issues members' certificates; a member issued by another authority is
//! refused by clients and by the balancer.

use ferry_tests::{ferry, path_str, start_balancer, test_authority, Proc, SECRET};

/// Starts `ferry server` with the certificate `cert`/`key` and the
/// authority `ca` (and not the tests' authority key).
fn server_with(id: u32, data: &std::path::Path, ca: &str, cert: &str, key: &str) -> (Proc, String) {
    let id_s = id.to_string();
    let dir = data.join(format!("server-{id}"));
    let args = [
        "server",
        "--id",
        &id_s,
        "--listen",
        "127.0.0.1:0",
        "--data",
        path_str(&dir),
        "--cert",
        cert,
        "--key",
        key,
    ];
    let envs = [
        ("FERRY_SECRET", SECRET),
        ("FERRY_CA", ca),
        ("FERRY_CA_KEY", ""),
    ];
    let mut p = Proc::spawn(&format!("server {id}"), &args, &envs);
    let addr = p.wait_listening();
    (p, addr)
}

#[test]
fn issued_certificates_serve_and_another_authoritys_member_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name).to_str().unwrap().to_string();

    // A second `ca init` in the same place is refused: it would not be
    // trusted by anything the first issued.
    let ours = test_authority();
    let again = ferry(&["ca", "init", "--dir", path_str(ours)], &[]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(
        again.stderr.contains("already holds an authority"),
        "{again:?}"
    );

    // A server with a certificate `ferry ca issue` made, without the
    // authority's key, serves clients of the authority.
    let issued = ferry(
        &[
            "ca",
            "issue",
            "--dir",
            path_str(ours),
            "--role",
            "server",
            "--out",
            &at("s1"),
        ],
        &[],
    );
    assert!(issued.status.success(), "{issued:?}");
    let key_mode = std::fs::metadata(at("s1.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode.permissions()) & 0o777,
        0o600
    );
    let ca = ours.join("ca.pem");
    let (_good, good_addr) =
        server_with(1, dir.path(), path_str(&ca), &at("s1.pem"), &at("s1.key"));
    let (_balancer, balancer) = start_balancer(&[(1, &good_addr)]);
    let ok = ferry(&["connect", "--balancer", &balancer], &[]);
    assert!(ok.status.success(), "{ok:?}");

    // Another authority's server: a client that trusts ours refuses it...
    let theirs = at("theirs");
    assert!(ferry(&["ca", "init", "--dir", &theirs], &[])
        .status
        .success());
    let rogue_dir = std::path::Path::new(&theirs);
    let issued = ferry(
        &[
            "ca",
            "issue",
            "--dir",
            &theirs,
            "--role",
            "server",
            "--out",
            &at("rogue"),
        ],
        &[],
    );
    assert!(issued.status.success(), "{issued:?}");
    let rogue_ca = rogue_dir.join("ca.pem");
    let (_rogue, rogue_addr) = server_with(
        2,
        dir.path(),
        path_str(&rogue_ca),
        &at("rogue.pem"),
        &at("rogue.key"),
    );
    let refused = ferry(&["connect", "--balancer", &rogue_addr], &[]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("not trusted")
            && refused
                .stderr
                .contains("not issued by the cluster's authority"),
        "{refused:?}"
    );
    // ... and so does our balancer, whose probes it cannot answer: the
    // client hears that no server answers.
    let (_b2, balancer2) = start_balancer(&[(2, &rogue_addr)]);
    let none = ferry(&["connect", "--balancer", &balancer2], &[]);
    assert_eq!(none.status.code(), Some(5), "no server: {none:?}");
    assert!(none.stderr.contains("no server available"), "{none:?}");
    assert!(!none.stderr.contains("panicked") && !refused.stderr.contains("panicked"));
}
