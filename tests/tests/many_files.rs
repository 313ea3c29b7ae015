//! Many files in one command, and pipes, through real processes: `ferry
//! put PATH...`, `ferry get NAME... DIR`, `-` for standard input and
//! output, and client options before the command's name.

use ferry_tests::{
    assert_fails, balancer_with_alice, noise, path_str, start_server, via_server, Run, User,
};
use std::path::Path;

const PASSWORD: &str = "correct horse battery";

fn stored(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("stored "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// How many sessions a command had: `-v` says "via server" once for each.
fn sessions(run: &Run) -> usize {
    run.stderr.matches("via server").count()
}

/// `ferry -v --balancer B ARGS` as `user`: the options first (the way
/// User::run puts them last would put them after a `--`).
fn run_first(user: &User, args: &[&str]) -> Run {
    let mut all = vec!["-v", "--balancer", &user.balancer];
    all.extend(args);
    ferry_tests::ferry(&all, &[("FERRY_HOME", path_str(&user.home))])
}

fn alice(data: &Path, home: &Path) -> (Vec<ferry_tests::Proc>, User) {
    let (server, addr) = start_server(1, data);
    let (balancer, alice) = balancer_with_alice(&[(1, addr)], home, PASSWORD);
    (vec![server, balancer], alice)
}

#[test]
fn put_stores_each_file_under_its_own_name_in_one_session_and_get_fetches_them_back() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_procs, alice) = alice(data.path(), home.path());

    // Odd names and sizes: empty, one byte, a chunk and a bit, spaces,
    // non-ASCII, a leading dash (after `--`).
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("one byte", noise(1, 1)),
        ("café.txt", noise(2, 4097)),
        ("-dash", noise(3, 70_000)),
        ("big.bin", noise(4, 1_300_000)),
    ];
    let mut args = vec!["put".to_string(), "--".to_string()];
    for (name, content) in &files {
        let path = work.path().join(name);
        std::fs::write(&path, content).unwrap();
        args.push(path_str(&path).to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_first(&alice, &args);
    assert!(run.status.success(), "{run:?}");
    let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        stored(&run),
        ["empty", "one", "café.txt", "-dash", "big.bin"]
    );
    assert!(
        run.stdout.contains("stored one byte (1 B, 1 bytes)"),
        "{run:?}"
    );
    assert_eq!(sessions(&run), 1, "one session for five files: {run:?}");

    // All of them back into a directory, in one session.
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut args = vec!["get", "--"];
    args.extend(&names);
    args.push(path_str(&out));
    let run = run_first(&alice, &args);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(sessions(&run), 1, "{run:?}");
    for (name, content) in &files {
        assert_eq!(&std::fs::read(out.join(name)).unwrap(), content, "{name}");
    }
    // And nothing else: no partial file is left behind.
    let mut there: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    there.sort();
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.sort();
    assert_eq!(there, want);

    // Again: every destination exists, so every file is refused before
    // anything is downloaded; with --force, all are replaced.
    let mut again = args.clone();
    again.insert(1, "--force");
    assert_fails(&run_first(&alice, &args), "exists; use --force");
    let run = run_first(&alice, &again);
    assert!(run.status.success(), "{run:?}");
}

#[test]
fn one_failed_file_does_not_stop_the_others_and_fails_the_command() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_procs, alice) = alice(data.path(), home.path());
    let a = work.path().join("a.txt");
    let b = work.path().join("b.txt");
    let c = work.path().join("c.txt");
    std::fs::write(&a, b"first a").unwrap();
    std::fs::write(&b, b"b").unwrap();
    std::fs::write(&c, b"c").unwrap();
    assert!(alice.run(&["put", path_str(&a)]).status.success());

    // a.txt exists on the cluster: refused; b and c are stored.
    std::fs::write(&a, b"second a").unwrap();
    let run = alice.run(&["put", path_str(&a), path_str(&b), path_str(&c)]);
    assert_eq!(run.status.code(), Some(6), "a conflict: {run:?}");
    assert_eq!(stored(&run), ["b.txt", "c.txt"]);
    assert!(
        run.stderr.contains("a.txt: a file of that name exists"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("1 of 3 files were not stored"),
        "{run:?}"
    );

    // A missing name among those asked for: the others still come.
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let run = alice.run(&["get", "a.txt", "nothing", "c.txt", path_str(&out)]);
    assert_eq!(run.status.code(), Some(3), "not found: {run:?}");
    assert!(run.stderr.contains("nothing: no such file"), "{run:?}");
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"first a");
    assert_eq!(std::fs::read(out.join("c.txt")).unwrap(), b"c");
    assert!(!out.join("nothing").exists());
}

#[test]
fn pipes_go_both_ways() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (_procs, alice) = alice(data.path(), home.path());
    let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();

    let run = alice.run_with_input(&["put", "-", "--as", "lines.txt"], Some(&text));
    assert!(run.status.success(), "{run:?}");
    assert!(run.stdout.contains("stored lines.txt ("), "{run:?}");
    assert!(
        run.stdout.contains(&format!(" {} bytes)", text.len())),
        "{run:?}"
    );
    let run = alice.run(&["get", "lines.txt", "-"]);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, text, "the content alone on standard output");

    // Standard input redirected from a file (its size known), and a
    // download piped on: as a shell runs them.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), &text).unwrap();
    let envs = [
        ("FERRY_HOME", path_str(&alice.home)),
        ("FERRY_BALANCER", alice.balancer.as_str()),
    ];
    let run = ferry_tests::shell(
        "ferry put - --as redirected.txt < in.txt && ferry get redirected.txt - | wc -c",
        dir.path(),
        &envs,
    );
    assert!(run.status.success(), "{run:?}");
    assert!(!dir.path().join("-").exists(), "no file named -");
    assert!(run.stdout.contains("stored redirected.txt"), "{run:?}");
    assert_eq!(
        run.stdout.lines().last().map(str::trim),
        Some(text.len().to_string().as_str())
    );
    assert!(run.stderr.contains("to standard output"), "{run:?}");
    // Nothing of the private copy stays in the temporary directory.
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(".ferry-stdout-")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn mistakes_of_the_command_line_are_refused_before_anything_is_sent() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_procs, alice) = alice(data.path(), home.path());
    let a = work.path().join("x");
    let sub = work.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let b = sub.join("x");
    std::fs::write(&a, b"a").unwrap();
    std::fs::write(&b, b"b").unwrap();

    let usage = |run: Run, says: &str| {
        assert_eq!(run.status.code(), Some(2), "{run:?}");
        assert!(run.stderr.contains(says), "{says}: {run:?}");
    };
    usage(alice.run(&["put", "-"]), "give it one with --as NAME");
    usage(
        alice.run(&["put", path_str(&a), path_str(&b), "--as", "y"]),
        "--as names a single file",
    );
    usage(alice.run(&["get", "x", "x", "out"]), "named twice");
    usage(
        alice.run(&["get", "x", "y", "-"]),
        "standard output (-) takes one file",
    );
    usage(
        alice.run(&["put", path_str(&a), path_str(&b)]),
        "would both be stored as x",
    );
    assert_fails(
        &alice.run(&["get", "x", "y", path_str(&a)]),
        "is not a directory; several files go into a directory",
    );
    // Nothing was stored by any of them.
    let run = alice.run(&["ls"]);
    assert!(run.stdout.contains("no files"), "{run:?}");
}

#[test]
fn refusals_exit_with_codes_of_their_own() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (mut procs, alice) = alice(data.path(), home.path());
    let a = work.path().join("a");
    std::fs::write(&a, b"a").unwrap();
    let code = |args: &[&str]| alice.run(args).status.code();
    assert_eq!(code(&["put", path_str(&a)]), Some(0));
    assert_eq!(code(&["put", path_str(&a)]), Some(0), "unchanged");
    std::fs::write(&a, b"another a").unwrap();
    assert_eq!(code(&["put", path_str(&a)]), Some(6), "conflict");
    assert_eq!(
        code(&["get", "nothing", path_str(&work.path().join("n"))]),
        Some(3),
        "not found"
    );
    assert_eq!(code(&["share", "a", "nobody"]), Some(3), "no such user");
    let run = alice.run_with_input(
        &["register", "alice", "--password-stdin"],
        Some("whatever-pw\n"),
    );
    assert_eq!(run.status.code(), Some(6), "a taken name: {run:?}");
    assert_eq!(code(&["logout"]), Some(0));
    assert_eq!(code(&["ls"]), Some(4), "not logged in");
    let run = alice.run_with_input(
        &["login", "alice", "--password-stdin"],
        Some("wrong-password\n"),
    );
    assert_eq!(run.status.code(), Some(4), "a wrong password: {run:?}");
    // No server: the balancer's only server is gone.
    drop(procs.remove(0));
    let run = alice.run(&["connect"]);
    assert_eq!(run.status.code(), Some(5), "no server: {run:?}");
}

#[test]
fn client_options_may_come_before_the_command() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (_procs, alice) = alice(data.path(), home.path());
    let run = ferry_tests::ferry(
        &["-v", "--balancer", &alice.balancer, "whoami"],
        &[("FERRY_HOME", path_str(&alice.home))],
    );
    assert!(run.status.success(), "{run:?}");
    assert!(run.stdout.contains("alice"), "{run:?}");
    assert_eq!(via_server(&run), 1);
}

#[test]
fn json_output_parses_and_holds_what_scripts_need() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_procs, alice) = alice(data.path(), home.path());
    let parse = |run: &Run| -> serde_json::Value {
        serde_json::from_str(run.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {run:?}"))
    };
    let a = work.path().join("a \"quoted\".txt");
    std::fs::write(&a, b"alpha").unwrap();

    let me = parse(&alice.run(&["--json", "whoami"]));
    assert_eq!(me["user"], "alice");
    assert_eq!(me["user_id"], 1);

    let run = alice.run(&["put", path_str(&a), path_str(&a), "--json"]);
    assert_eq!(run.status.code(), Some(2), "the same name twice: {run:?}");
    assert!(alice.run(&["put", path_str(&a), "--json"]).status.success());
    let run = alice.run(&["put", path_str(&a), "--as", "b.txt", "--json"]);
    let put = parse(&run);
    assert_eq!(put["stored"][0]["name"], "b.txt");
    assert_eq!(put["stored"][0]["size"], 5);
    let digest = put["stored"][0]["digest"].as_str().unwrap().to_string();
    assert_eq!(digest, blake3::hash(b"alpha").to_hex().as_str());
    assert!(put["failed"].as_array().unwrap().is_empty());

    assert!(alice
        .with_password(&["register", "bobby"], PASSWORD)
        .status
        .success());
    assert!(alice.run(&["share", "b.txt", "bobby"]).status.success());
    let ls = parse(&alice.run(&["ls", "--json"]));
    let files = ls["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    for f in files {
        for field in ["name", "owner", "size", "modified", "shared_with"] {
            assert!(f.get(field).is_some(), "{field} in {f}");
        }
        assert_eq!(f["owner"], "alice");
        assert!(f["modified"].as_str().unwrap().ends_with('Z'));
    }
    let names: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"a \"quoted\".txt"), "{names:?}");
    let b = files.iter().find(|f| f["name"] == "b.txt").unwrap();
    assert_eq!(b["shared_with"], serde_json::json!(["bobby"]));

    // A get with one failure: JSON on stdout still, the code of the
    // failure, and nothing but the summary on stderr.
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let run = alice.run(&["get", "b.txt", "nothing", path_str(&out), "--json"]);
    assert_eq!(run.status.code(), Some(3), "{run:?}");
    let get = parse(&run);
    assert_eq!(get["downloaded"][0]["name"], "b.txt");
    assert_eq!(get["downloaded"][0]["to"], path_str(&out.join("b.txt")));
    assert_eq!(get["failed"][0]["file"], "nothing");
    assert_eq!(get["failed"][0]["exit_code"], 3);
    assert!(!run.stderr.contains("ferry: nothing"), "{run:?}");
}

/// A folder of more files than one answer of the server holds (a listing
/// longer than a frame comes in pages): `ls`, `ls --json` and `get -r`
/// see every file, each once.
#[test]
fn a_folder_larger_than_a_listing_page_is_listed_and_fetched_whole() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_procs, alice) = alice(data.path(), home.path());
    // 1,200 names of about 570 bytes: some 700 KiB of listing.
    let tree = work.path().join("tree");
    let deep = ["d".repeat(200), "e".repeat(200), "f".repeat(150)].join("/");
    std::fs::create_dir_all(tree.join(&deep)).unwrap();
    let mut want = Vec::new();
    for i in 0..1200 {
        let name = format!("file-{i:04}");
        std::fs::write(tree.join(&deep).join(&name), i.to_string()).unwrap();
        want.push(format!("tree/{deep}/{name}"));
    }
    let run = alice.run(&["put", "-r", path_str(&tree)]);
    assert!(run.status.success(), "{run:?}");

    let run = alice.run(&["ls", "--json"]);
    assert!(run.status.success(), "{run:?}");
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let names: Vec<&str> = (doc["files"].as_array().unwrap().iter())
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, want, "every file once, in order");

    let run = alice.run(&["ls", "tree"]);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(
        run.stdout.lines().count(),
        1 + want.len(),
        "a header and each file"
    );

    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let run = alice.run(&["get", "-r", "tree", path_str(&out)]);
    assert!(run.status.success(), "{run:?}");
    let got = std::fs::read_dir(out.join("tree").join(&deep))
        .unwrap()
        .count();
    assert_eq!(got, want.len());
    let last = out.join("tree").join(&deep).join("file-1199");
    assert_eq!(std::fs::read_to_string(last).unwrap(), "1199");
}

/// `get` of more files than the process may open descriptors: each file's
/// partial file is locked only while its own batch runs, and batches are
/// as large as the limit allows. (Every partial file used to be locked
/// for the whole command: a folder of a few hundred files failed under
/// `ulimit -n 256`, and of thousands under the usual 1,024.)
#[test]
fn get_of_more_files_than_descriptors_fetches_them_all() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_procs, alice) = alice(data.path(), home.path());
    let tree = work.path().join("many");
    std::fs::create_dir(&tree).unwrap();
    for i in 0..600 {
        std::fs::write(tree.join(format!("f{i:03}")), i.to_string()).unwrap();
    }
    let run = alice.run(&["put", "-r", path_str(&tree)]);
    assert!(run.status.success(), "{run:?}");
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let envs = [("FERRY_HOME", path_str(&alice.home))];
    let args = [
        "get",
        "-r",
        "many",
        path_str(&out),
        "--balancer",
        &alice.balancer,
    ];
    let run = ferry_tests::ferry_with_fd_limit(256, &args, &envs);
    assert!(run.status.success(), "{run:?}");
    let got = std::fs::read_dir(out.join("many")).unwrap().count();
    assert_eq!(got, 600, "every file, and no partial file left");
    assert_eq!(
        std::fs::read_to_string(out.join("many/f599")).unwrap(),
        "599"
    );
}

/// A `put` of files stored already as they are (run twice, or again after
/// it was cut off) reports them unchanged and succeeds; a file changed
/// since (another time) is refused as before, and --force replaces it.
#[test]
fn put_again_leaves_files_stored_as_they_are_unchanged() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_procs, alice) = alice(data.path(), home.path());
    let tree = work.path().join("docs");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    for (i, rel) in ["a.txt", "b.txt", "sub/c.txt"].iter().enumerate() {
        std::fs::write(tree.join(rel), noise(i as u64, 5000)).unwrap();
    }
    let loose = work.path().join("loose.txt");
    std::fs::write(&loose, b"loose").unwrap();
    let run = alice.run(&["put", "-r", path_str(&tree)]);
    assert_eq!(stored(&run).len(), 3, "{run:?}");
    let run = alice.run(&["put", path_str(&loose), path_str(&tree.join("a.txt"))]);
    assert!(run.status.success(), "{run:?}");

    // Again, as they are: nothing stored, nothing failed.
    let run = alice.run(&["put", "-r", path_str(&tree), "--json"]);
    assert!(run.status.success(), "{run:?}");
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(doc["stored"].as_array().unwrap().len(), 0, "{run:?}");
    let names: Vec<&str> = (doc["unchanged"].as_array().unwrap().iter())
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docs/a.txt", "docs/b.txt", "docs/sub/c.txt"]);
    let run = alice.run(&["put", path_str(&loose), path_str(&tree.join("a.txt"))]);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout.matches("unchanged ").count(), 2, "{run:?}");

    // One changed since: refused, the others unchanged.
    std::fs::write(tree.join("b.txt"), noise(9, 5000)).unwrap();
    let run = alice.run(&["put", "-r", path_str(&tree)]);
    assert_eq!(run.status.code(), Some(6), "a conflict: {run:?}");
    assert!(
        run.stderr.contains("b.txt: a file of that name exists"),
        "{run:?}"
    );
    assert_eq!(run.stdout.matches("unchanged ").count(), 2, "{run:?}");
    let run = alice.run(&["put", "-r", "--force", path_str(&tree)]);
    assert_eq!(stored(&run).len(), 3, "{run:?}");
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let run = alice.run(&["get", "docs/b.txt", path_str(&out)]);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(std::fs::read(out.join("b.txt")).unwrap(), noise(9, 5000));
}
