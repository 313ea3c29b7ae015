//! Accounts through a real cluster: three `ferry server` processes (server 1
//! the master), balancers, and the client commands. Passwords go in with
//! `--password-stdin`; every password hash costs real time, so logins are
//! few.

use ferry_tests::{
    assert_fails, assert_ok, start_balancer, start_server, via_server, wait_connectable, Cluster,
    Proc, User,
};

const PASSWORD: &str = "correct horse battery";

#[test]
fn accounts_replicate_survive_a_dead_server_and_a_restart_catches_up() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(3, data.path());
    // The balancer knows the followers only, so registration is forwarded
    // to the master, and the follower it went through can be killed
    // without stopping the cluster. (A follower that has lost its master
    // takes no clients, so the master itself is not killed here.)
    let (_balancer, balancer) = start_balancer(&[(2, cluster.addr(2)), (3, cluster.addr(3))]);
    // Followers take clients once they have joined the master.
    wait_connectable(&balancer);
    let user = User::new(home.path(), &balancer);

    let run = user.with_password(&["register", "alice"], PASSWORD);
    assert_ok(&run, "registered alice as user 1");
    let dead = via_server(&run);
    let alive = if dead == 2 { 3 } else { 2 };
    cluster.kill(dead);

    // The balancer skips the dead server; the other one knows alice.
    let run = user.with_password(&["login", "alice"], PASSWORD);
    assert_ok(&run, "logged in as alice (user 1)");
    assert_eq!(via_server(&run), alive, "{run:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(user.session_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "session file mode {mode:o}");
    }
    assert_ok(&user.run(&["whoami"]), "alice (user 1)");

    // Two of three servers are a majority: the cluster still commits.
    let run = user.with_password(&["register", "bob"], PASSWORD);
    assert_ok(&run, "registered bob as user 2");

    let session = std::fs::read_to_string(user.session_file()).unwrap();
    assert_ok(&user.run(&["logout"]), "logged out");
    assert!(!user.session_file().exists());
    assert_fails(&user.run(&["whoami"]), "not logged in");
    // The servers refuse the logged-out token itself, not just the CLI.
    std::fs::write(user.session_file(), &session).unwrap();
    assert_fails(&user.run(&["whoami"]), "the session was logged out");

    // The dead server comes back on its data and catches up: it learns of
    // bob, registered while it was down, and of alice's logout. A balancer
    // that knows only it routes there once it has caught up.
    cluster.restart(dead);
    let (_only, only) = start_balancer(&[(dead, cluster.addr(dead))]);
    wait_connectable(&only);
    let user = User::new(home.path(), &only);
    assert_fails(&user.run(&["whoami"]), "the session was logged out");
    let run = user.with_password(&["login", "bob"], PASSWORD);
    assert_ok(&run, "logged in as bob (user 2)");
    assert_eq!(via_server(&run), dead, "{run:?}");
    assert_ok(&user.run(&["whoami"]), "bob (user 2)");
}

#[test]
fn account_errors_are_clear_and_say_nothing_about_who_exists() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (_server, server) = start_server(1, data.path());
    let (_balancer, balancer) = start_balancer(&[(1, &server)]);
    let user = User::new(home.path(), &balancer);

    assert_ok(
        &user.with_password(&["register", "alice"], PASSWORD),
        "registered alice as user 1",
    );
    // Usernames are case-insensitive.
    assert_fails(
        &user.with_password(&["register", "Alice"], PASSWORD),
        "username taken",
    );
    for bad in ["../x", "a"] {
        assert_fails(
            &user.with_password(&["register", bad], PASSWORD),
            "invalid username: usernames ",
        );
    }
    assert_fails(
        &user.with_password(&["register", "carol"], "short"),
        "invalid password",
    );

    let wrong = user.with_password(&["login", "alice"], "not the password");
    let unknown = user.with_password(&["login", "nobody"], PASSWORD);
    for run in [&wrong, &unknown] {
        assert_fails(run, "invalid username or password");
    }
    let error_line = |stderr: &str| {
        stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .map(str::to_string)
    };
    assert_eq!(error_line(&wrong.stderr), error_line(&unknown.stderr));
    assert!(!user.session_file().exists());
}

#[test]
fn client_commands_fail_clearly_without_a_session_or_a_password() {
    // None of these reach a server: the balancer address is never used.
    let home = tempfile::tempdir().unwrap();
    let user = User::new(home.path(), &ferry_tests::unused_addr());
    for cmd in ["whoami", "logout"] {
        assert_fails(&user.run(&[cmd]), "not logged in; run `ferry login");
    }
    std::fs::write(user.session_file(), "username alice\ntoken zz\n").unwrap();
    for cmd in ["whoami", "logout"] {
        let run = user.run(&[cmd]);
        assert_fails(&run, "is corrupt");
        assert!(run.stderr.contains("ferry login"), "{run:?}");
    }
    // Standard input is not a terminal, and --password-stdin is missing.
    for cmd in ["register", "login"] {
        assert_fails(&user.run(&[cmd, "alice"]), "--password-stdin");
    }
    // Nothing on standard input at all.
    assert_fails(
        &user.run_with_input(&["login", "alice", "--password-stdin"], Some("")),
        "no password on standard input",
    );
}

/// One balancer per server of `cluster`, so that a command goes through
/// the server it names: (balancer process, its address), by server id - 1.
fn balancer_per_server(cluster: &Cluster) -> Vec<(Proc, String)> {
    (1..=3)
        .map(|id| {
            let (p, addr) = start_balancer(&[(id, cluster.addr(id))]);
            wait_connectable(&addr);
            (p, addr)
        })
        .collect()
}

#[test]
fn passwd_changes_the_password_everywhere_and_ends_every_other_session() {
    let data = tempfile::tempdir().unwrap();
    let (home, other_home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cluster = Cluster::start(3, data.path());
    let balancers = balancer_per_server(&cluster);
    let on = |home: &std::path::Path, server: usize| User::new(home, &balancers[server - 1].1);
    let alice = on(home.path(), 1);
    assert_ok(
        &alice.with_password(&["register", "alice"], PASSWORD),
        "registered alice as user 1",
    );
    assert_ok(
        &alice.with_password(&["login", "alice"], PASSWORD),
        "logged in as alice (user 1)",
    );
    // Another machine of alice's, logged in through another server.
    let elsewhere = on(other_home.path(), 2);
    assert_ok(
        &elsewhere.with_password(&["login", "alice"], PASSWORD),
        "logged in as alice (user 1)",
    );
    const NEW: &str = "a brand new passphrase";
    // Without a terminal, both passwords come from standard input.
    assert_fails(&alice.run(&["passwd"]), "--password-stdin");
    let wrong = alice.run_with_input(
        &["passwd", "--password-stdin"],
        Some(&format!("not the password\n{NEW}\n")),
    );
    assert_fails(&wrong, "the current password is wrong");
    let run = on(home.path(), 3).run_with_input(
        &["passwd", "--password-stdin"],
        Some(&format!("{PASSWORD}\n{NEW}\n")),
    );
    assert_ok(
        &run,
        "password changed for alice; every other session of alice is logged out",
    );
    // This machine goes on with the new token; the other is refused.
    assert_ok(&alice.run(&["whoami"]), "alice (user 1)");
    for server in 1..=3 {
        assert_fails(
            &on(other_home.path(), server).run(&["whoami"]),
            "the password was changed since this login",
        );
    }
    // The old password fails and the new one works, through every server.
    assert_fails(
        &elsewhere.with_password(&["login", "alice"], PASSWORD),
        "invalid username or password",
    );
    for server in 1..=3 {
        let run = on(other_home.path(), server).with_password(&["login", "alice"], NEW);
        assert_ok(&run, "logged in as alice (user 1)");
        assert_eq!(via_server(&run), server as u32, "{run:?}");
    }
}

#[test]
fn logging_in_as_bob_logs_alice_out_on_the_servers() {
    let data = tempfile::tempdir().unwrap();
    let (home, aside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_server, server) = start_server(1, data.path());
    let (_balancer, balancer) = start_balancer(&[(1, &server)]);
    let user = User::new(home.path(), &balancer);
    for name in ["alice", "bob"] {
        let run = user.with_password(&["register", name], PASSWORD);
        assert!(run.status.success(), "{run:?}");
    }
    assert_ok(
        &user.with_password(&["login", "alice"], PASSWORD),
        "logged in as alice (user 1)",
    );
    let alices = std::fs::read_to_string(user.session_file()).unwrap();
    let run = user.with_password(&["login", "bob"], PASSWORD);
    assert_ok(&run, "logged in as bob (user 2)");
    assert!(
        run.stderr
            .contains("logged out alice, the login kept here before"),
        "{run:?}"
    );
    // alice's token, kept aside before, is refused by the servers.
    let copy = User::new(aside.path(), &balancer);
    std::fs::write(copy.session_file(), &alices).unwrap();
    assert_fails(&copy.run(&["whoami"]), "the session was logged out");
    assert_ok(&user.run(&["whoami"]), "bob (user 2)");
}

#[test]
fn wrong_passwords_through_different_servers_are_throttled_together() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(3, data.path());
    let balancers = balancer_per_server(&cluster);
    let on = |server: usize| User::new(home.path(), &balancers[server - 1].1);
    let run = on(1).with_password(&["register", "alice"], PASSWORD);
    assert!(run.status.success(), "{run:?}");
    // Three free failures, one through each server…
    for server in 1..=3 {
        assert_fails(
            &on(server).with_password(&["login", "alice"], "guess"),
            "invalid username or password",
        );
    }
    // …then every server makes this machine wait, even with the right
    // password.
    let run = on(1).with_password(&["login", "alice"], PASSWORD);
    assert_fails(&run, "too many failed logins; try again in");
    let secs: u64 = run
        .stderr
        .split("try again in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{run:?}"));
    assert!((1..=2).contains(&secs), "{run:?}");
    // Once the delay has passed, the owner gets in.
    std::thread::sleep(std::time::Duration::from_secs(secs + 1));
    assert_ok(
        &on(2).with_password(&["login", "alice"], PASSWORD),
        "logged in as alice (user 1)",
    );
}
