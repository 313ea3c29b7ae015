//! What an eavesdropper on every link sees: the simulator captures every
//! byte its hosts put on the network during a files scenario — register,
//! login, puts, gets, replication, fetches between servers — and none of
//! the users' passwords nor their files' contents is in it. The same
//! search over what the nodes wrote before TLS finds every one of them,
//! so the search itself can fail.

use ferry_sim::driver::capture;
use ferry_sim::scenarios::files::client::OpPlan;
use ferry_sim::scenarios::files::FilesPlan;
use ferry_sim::{run_files_scenario, FilesConfig};
use std::collections::HashSet;

const SEED: u64 = 3;
const NEEDLE: usize = 12;

/// Which of `needles` (12 bytes each) occur in `hay`.
fn found(hay: &[u8], needles: &HashSet<[u8; NEEDLE]>) -> HashSet<[u8; NEEDLE]> {
    hay.windows(NEEDLE)
        .filter_map(|w| <[u8; NEEDLE]>::try_from(w).ok())
        .filter(|w| needles.contains(w))
        .collect()
}

#[test]
fn the_wire_holds_neither_passwords_nor_file_contents() {
    let cfg = FilesConfig::swarm(SEED);
    let plan = FilesPlan::new(SEED, &cfg);
    let mut needles = HashSet::new();
    for user in &plan.users {
        let pw = user.password.as_bytes();
        assert!(pw.len() >= NEEDLE, "{:?}", user.password);
        needles.insert(<[u8; NEEDLE]>::try_from(&pw[..NEEDLE]).unwrap());
    }
    let passwords = needles.len();
    for client in &plan.clients {
        for step in &client.steps {
            if let OpPlan::Upload { content, .. } = &step.op {
                if content.len() >= 2 * NEEDLE {
                    let mid = content.len() / 2;
                    needles.insert(<[u8; NEEDLE]>::try_from(&content[mid..mid + NEEDLE]).unwrap());
                }
            }
        }
    }
    assert!(needles.len() > passwords + 3, "the plan uploads files");

    capture::start();
    let outcome = run_files_scenario(SEED, &cfg);
    let captured = capture::take();

    let in_plaintext = found(&captured.plaintext, &needles);
    let on_wire = found(&captured.wire, &needles);
    // Every password is sent (register, login); most contents are (some
    // uploads may be refused before their bytes go).
    assert!(
        in_plaintext.len() >= passwords + 3,
        "{} of {}",
        in_plaintext.len(),
        needles.len()
    );
    assert!(captured.wire.len() > captured.plaintext.len() / 2);
    assert!(
        on_wire.is_empty(),
        "{} secret(s) in clear on the wire",
        on_wire.len()
    );
    outcome.assert_ok();
}
