//! What a writer sends one reader in its SYNC turn, decided from the two
//! listings alone (see `docs/peers.md`, "A writer's turn"): names the
//! reader lacks are PUT; a name both hold with different contents goes to
//! the version the rule prefers, the other kept under its conflict name.
//!
//! The rule — newer modification time, ties to the greater digest — is a
//! property of the two versions, not of who holds them, so every pair of
//! peers decides alike, and a copy keeps its original's modification time.

use speedy::{Readable, Writable};
use std::collections::BTreeMap;

/// A regular file of a peer's directory, as a listing gives it.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct SyncEntry {
    pub name: String,
    pub size: u64,
    pub modified_ms: u64,
    pub digest: [u8; 32],
}

/// One step of a writer's work for one reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send the writer's file `name` to be stored as `as_name`.
    Put { name: String, as_name: String },
    /// The reader moves its own `name` (holding `digest`) to its conflict
    /// name, making room for the writer's version.
    Yield { name: String, digest: [u8; 32] },
}

/// Does version `a` keep the name against version `b`?
pub fn wins(a: &SyncEntry, b: &SyncEntry) -> bool {
    (a.modified_ms, a.digest) > (b.modified_ms, b.digest)
}

/// Where a version that lost its name is kept: a function of the name and
/// the version's content only, so every peer names it alike.
pub fn conflict_name(name: &str, digest: &[u8; 32]) -> String {
    let short: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    // Names are at most 255 bytes; keep the suffix whole.
    let suffix = format!(".conflict-{short}");
    let mut stem = name.to_string();
    while stem.len() + suffix.len() > crate::server::MAX_NAME {
        stem.pop();
    }
    // A cut stem may end in a joiner that now joins nothing (or the name
    // was never a valid one): shorten it until the whole name is valid
    // (the suffix alone is).
    while !stem.is_empty() && crate::names::check_name(&format!("{stem}{suffix}")).is_err() {
        stem.pop();
    }
    format!("{stem}{suffix}")
}

/// The writer's actions for one reader, in order.
pub fn plan(mine: &[SyncEntry], theirs: &[SyncEntry]) -> Vec<Action> {
    let theirs: BTreeMap<&str, &SyncEntry> = theirs.iter().map(|e| (e.name.as_str(), e)).collect();
    let mut actions = Vec::new();
    for m in mine {
        match theirs.get(m.name.as_str()) {
            None => actions.push(Action::Put {
                name: m.name.clone(),
                as_name: m.name.clone(),
            }),
            Some(t) if t.digest == m.digest => {}
            Some(t) if wins(m, t) => {
                actions.push(Action::Yield {
                    name: m.name.clone(),
                    digest: t.digest,
                });
                actions.push(Action::Put {
                    name: m.name.clone(),
                    as_name: m.name.clone(),
                });
            }
            Some(_) => {
                // Ours loses: the reader keeps its own; ours goes beside it,
                // unless it is there already.
                let as_name = conflict_name(&m.name, &m.digest);
                let there = theirs.get(as_name.as_str());
                if there.is_none_or(|e| e.digest != m.digest)
                    && !mine.iter().any(|e| e.name == as_name)
                {
                    actions.push(Action::Put {
                        name: m.name.clone(),
                        as_name,
                    });
                }
            }
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, modified_ms: u64, content: u8) -> SyncEntry {
        SyncEntry {
            name: name.into(),
            size: 1,
            modified_ms,
            digest: *blake3::hash(&[content]).as_bytes(),
        }
    }

    #[test]
    fn missing_names_go_across_and_equal_ones_stay() {
        let mine = [e("a", 1, 1), e("b", 1, 2)];
        let theirs = [e("b", 9, 2)];
        assert_eq!(
            plan(&mine, &theirs),
            vec![Action::Put {
                name: "a".into(),
                as_name: "a".into()
            }]
        );
    }

    #[test]
    fn the_newer_version_keeps_the_name_and_the_other_is_kept_aside() {
        let newer = e("x", 5, 1);
        let older = e("x", 3, 2);
        assert_eq!(
            plan(std::slice::from_ref(&newer), std::slice::from_ref(&older)),
            vec![
                Action::Yield {
                    name: "x".into(),
                    digest: older.digest
                },
                Action::Put {
                    name: "x".into(),
                    as_name: "x".into()
                }
            ]
        );
        assert_eq!(
            plan(std::slice::from_ref(&older), &[newer]),
            vec![Action::Put {
                name: "x".into(),
                as_name: conflict_name("x", &older.digest)
            }]
        );
    }

    #[test]
    fn conflict_names_fit_the_name_limit() {
        let long = "n".repeat(255);
        let c = conflict_name(&long, &[0xab; 32]);
        assert!(c.len() <= 255 && c.ends_with(".conflict-abababab"), "{c}");
        assert!(crate::server::check_name(&c).is_ok());
        // Cut inside an emoji ZWJ sequence: the joiner left at the end of
        // the stem would join nothing, so it goes too.
        let joined = format!("{}👩\u{200D}💻", "n".repeat(230));
        assert!(crate::server::check_name(&joined).is_ok());
        let c = conflict_name(&joined, &[0xab; 32]);
        assert_eq!(c, format!("{}👩.conflict-abababab", "n".repeat(230)));
        assert!(crate::server::check_name(&c).is_ok());
    }

    /// A directory in the round model: name → (modified, content).
    type Dir = BTreeMap<String, (u64, u8)>;

    fn listing(d: &Dir) -> Vec<SyncEntry> {
        d.iter().map(|(n, (m, c))| e(n, *m, *c)).collect()
    }

    /// One round, every peer writing once in order, each reader acting on
    /// the writer's plan as a peer does (a yield renames, never replaces; a
    /// put never replaces).
    fn round(dirs: &mut [Dir]) {
        for w in 0..dirs.len() {
            for r in 0..dirs.len() {
                if r == w {
                    continue;
                }
                let actions = plan(&listing(&dirs[w]), &listing(&dirs[r]));
                for a in actions {
                    match a {
                        Action::Yield { name, digest } => {
                            let Some(&(m, c)) = dirs[r].get(&name) else {
                                continue;
                            };
                            if *blake3::hash(&[c]).as_bytes() != digest {
                                continue;
                            }
                            let aside = conflict_name(&name, &digest);
                            dirs[r].remove(&name);
                            dirs[r].entry(aside).or_insert((m, c));
                        }
                        Action::Put { name, as_name } => {
                            let v = dirs[w][&name];
                            dirs[r].entry(as_name).or_insert(v);
                        }
                    }
                }
            }
        }
    }

    /// The argument of docs/peers.md, tried: after one round every
    /// directory is the same and every version anyone held is still there.
    #[test]
    fn one_round_leaves_every_directory_alike_and_loses_no_version() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..2000 {
            let peers = 2 + next(4) as usize;
            let mut dirs: Vec<Dir> = (0..peers)
                .map(|_| {
                    (0..next(5))
                        .map(|_| (format!("f{}", next(4)), (next(3), next(4) as u8)))
                        .collect()
                })
                .collect();
            let before: Vec<Dir> = dirs.clone();
            round(&mut dirs);
            // The same names with the same contents (one content may carry
            // different modification times on different peers).
            let contents = |d: &Dir| -> Vec<(String, u8)> {
                d.iter().map(|(n, (_, c))| (n.clone(), *c)).collect()
            };
            for d in &dirs[1..] {
                assert_eq!(contents(d), contents(&dirs[0]), "from {before:?}");
            }
            let held: Vec<u8> = dirs[0].values().map(|(_, c)| *c).collect();
            for d in &before {
                for (_, c) in d.values() {
                    assert!(
                        held.contains(c),
                        "lost version {c} from {before:?}: {dirs:?}"
                    );
                }
            }
        }
    }
}
