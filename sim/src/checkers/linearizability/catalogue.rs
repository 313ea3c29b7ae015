//! The sequential model of Ferry's catalogue, written from the
//! specification (README, docs/replication.md, docs/transfer.md), not from
//! the core: accounts, files per owner, and shares.
//!
//! Usernames are case-insensitive (folded to lower case); a username is
//! registered once, with the password of whoever won; a login succeeds with
//! that password and no other, and says the user id the registration said.
//! A file is an owner's name for some content; uploading over an existing
//! name needs `replace`; deleting a file drops its shares; sharing needs the
//! file and the grantee, and not oneself; `ls` shows one's own files (with
//! their grantees) and the files shared with one.
//!
//! Folders: a name is a path; a folder is the names under `folder/`, and
//! exists while a file is under it. A name is never both a file and a
//! folder of one owner (an upload that would make it so is refused,
//! "conflict"). `share`/`unshare` of a name that is not a file act on the
//! folder of that name: a folder share lets the grantee read what is under
//! the folder, now and later; `rm` of a folder is refused ("is a folder");
//! `rm -r` of a file removes it, of a folder every file under it and the
//! shares of it and of the folders under it.
//!
//! A batch of uploads (`ferry put` of several files) that reached the log
//! is one entry: its files are put one after another, each as a `put`
//! would be (stored, or refused "exists" or "conflict"), all at one point.
//!
//! Where the specification does not order two refusals that both apply
//! (no such file *and* no such user), either is accepted.

use super::{Model, Op};
use crate::disk::{describe_attrs, short};
use ferry_core::FileAttrs;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// An operation as the model sees it; usernames already folded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Register {
        user: String,
        password: String,
    },
    Login {
        user: String,
        password: String,
    },
    Put {
        owner: String,
        name: String,
        size: u64,
        digest: [u8; 32],
        replace: bool,
        /// As the client sent them: the file keeps the `rwx` bits of the
        /// mode (and a time within a second's nanoseconds).
        attrs: Option<FileAttrs>,
    },
    /// The files of a batch that reached the log, in order: (name, size,
    /// digest), with the batch's `--force`.
    PutMany {
        owner: String,
        files: Vec<(String, u64, [u8; 32])>,
        replace: bool,
    },
    Rm {
        owner: String,
        name: String,
    },
    /// `rm -r`.
    RmFolder {
        owner: String,
        name: String,
    },
    Share {
        owner: String,
        name: String,
        grantee: String,
    },
    Unshare {
        owner: String,
        name: String,
        grantee: String,
    },
    Ls {
        user: String,
    },
    /// The user deletes their account: it, their files and every share
    /// either way go.
    DeleteAccount {
        user: String,
    },
}

impl Input {
    /// The users whose part of the catalogue the operation reads or writes.
    fn users(&self) -> Vec<&str> {
        match self {
            Input::Register { user, .. }
            | Input::Login { user, .. }
            | Input::Ls { user }
            | Input::DeleteAccount { user } => vec![user],
            Input::Put { owner, .. }
            | Input::PutMany { owner, .. }
            | Input::Rm { owner, .. }
            | Input::RmFolder { owner, .. } => vec![owner],
            Input::Share { owner, grantee, .. } | Input::Unshare { owner, grantee, .. } => {
                vec![owner, grantee]
            }
        }
    }
}

/// One line of a listing: owner, name, size, attributes, grantees
/// (sorted).
pub type Line = (String, String, u64, Option<FileAttrs>, Vec<String>);

/// An answer as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// No answer, or one that leaves open whether it took effect: the
    /// operation may have taken effect with whatever result the state gave.
    Unknown,
    Registered(u64),
    Taken,
    LoggedIn(u64),
    BadCredentials,
    Stored {
        size: u64,
        digest: [u8; 32],
    },
    Exists,
    /// The name is a folder, or in a folder that is a file.
    Conflict,
    /// Each file's of a batch: `Stored`, `Exists` or `Conflict`.
    Batch(Vec<Output>),
    /// `rm` of a folder.
    IsAFolder,
    Deleted,
    FolderDeleted,
    Shared,
    Unshared,
    NotShared,
    NoSuchFile,
    NoSuchUser,
    ShareWithSelf,
    AccountDeleted,
    /// Sorted lines.
    Listing(Vec<Line>),
    /// An answer no operation of its kind may get: never accepted.
    Unexpected(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Account {
    pub password: String,
    /// `None` while only an unanswered registration made it.
    pub id: Option<u64>,
}

/// A file: size, digest, attributes (as kept).
pub type File = (u64, [u8; 32], Option<FileAttrs>);

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct State {
    pub users: BTreeMap<String, Account>,
    /// (owner, name) -> the file
    pub files: BTreeMap<(String, String), File>,
    /// (owner, name, grantee)
    pub shares: BTreeSet<(String, String, String)>,
    /// (owner, folder, grantee)
    pub folder_shares: BTreeSet<(String, String, String)>,
    /// Users whose account was deleted (and not registered again since).
    pub deleted: BTreeSet<String>,
}

impl State {
    fn has_file(&self, owner: &str, name: &str) -> bool {
        self.files
            .contains_key(&(owner.to_string(), name.to_string()))
    }

    fn is_folder(&self, owner: &str, name: &str) -> bool {
        let prefix = format!("{name}/");
        (self.files.keys()).any(|(o, n)| o == owner && n.starts_with(&prefix))
    }

    /// Would a file `name` of `owner` make a name both a file and a folder?
    fn conflict(&self, owner: &str, name: &str) -> bool {
        self.is_folder(owner, name)
            || (name.match_indices('/')).any(|(i, _)| self.has_file(owner, &name[..i]))
    }

    /// Who may read `owner`'s `name` besides them: by a share of the file,
    /// or of a folder it is in; sorted.
    fn readers(&self, owner: &str, name: &str) -> Vec<String> {
        let by_file = (self.shares.iter())
            .filter(|(o, n, _)| o == owner && n == name)
            .map(|(_, _, g)| g.clone());
        let by_folder = (self.folder_shares.iter())
            .filter(|(o, f, _)| o == owner && name.starts_with(&format!("{f}/")))
            .map(|(_, _, g)| g.clone());
        let all: BTreeSet<String> = by_file.chain(by_folder).collect();
        all.into_iter().collect()
    }

    /// What `ls` shows `user`, sorted.
    pub fn listing(&self, user: &str) -> Vec<Line> {
        let mut lines = Vec::new();
        for ((owner, name), (size, _, attrs)) in &self.files {
            if owner == user {
                let grantees = self.readers(owner, name);
                lines.push((owner.clone(), name.clone(), *size, *attrs, grantees));
            } else if self.readers(owner, name).iter().any(|g| g == user) {
                lines.push((owner.clone(), name.clone(), *size, *attrs, Vec::new()));
            }
        }
        lines.sort();
        lines
    }
}

/// The catalogue's model, for [`super::check`].
pub struct Catalogue;

impl Model for Catalogue {
    type State = State;
    type Input = Input;
    type Output = Output;

    fn init(&self) -> State {
        State::default()
    }

    fn step(&self, s: &State, input: &Input, out: &Output) -> Option<State> {
        let unknown = *out == Output::Unknown;
        match input {
            Input::Register { user, password } => {
                let taken = s.users.contains_key(user);
                match out {
                    Output::Taken | Output::Unknown if taken => Some(s.clone()),
                    Output::Registered(_) | Output::Unknown if !taken => {
                        let id = match out {
                            Output::Registered(id) => Some(*id),
                            _ => None,
                        };
                        let mut s = s.clone();
                        let password = password.clone();
                        s.users.insert(user.clone(), Account { password, id });
                        s.deleted.remove(user);
                        Some(s)
                    }
                    _ => None,
                }
            }
            Input::Login { user, password } => {
                let account = s.users.get(user).filter(|a| a.password == *password);
                match (out, account) {
                    (Output::BadCredentials, None) => Some(s.clone()),
                    (Output::LoggedIn(id), Some(a)) => match a.id {
                        Some(known) if known != *id => None,
                        Some(_) => Some(s.clone()),
                        // The answer names the id the registration got.
                        None => {
                            let mut s = s.clone();
                            s.users.insert(
                                user.clone(),
                                Account {
                                    password: password.clone(),
                                    id: Some(*id),
                                },
                            );
                            Some(s)
                        }
                    },
                    _ => None,
                }
            }
            Input::Put {
                owner,
                name,
                size,
                digest,
                replace,
                attrs,
            } => {
                let exists = s.has_file(owner, name) && !replace;
                let conflict = s.conflict(owner, name);
                // An upload of a deleted account stores nothing (its
                // client hears its session refused, not recorded here).
                let gone = s.deleted.contains(owner);
                let refused = exists || conflict || gone;
                let file = (*size, *digest, attrs.map(kept));
                match out {
                    Output::Exists if exists => Some(s.clone()),
                    Output::Conflict if conflict => Some(s.clone()),
                    Output::Unknown if refused => Some(s.clone()),
                    Output::Stored { size: z, digest: d }
                        if !refused && z == size && d == digest =>
                    {
                        Some(put(s, owner, name, file))
                    }
                    Output::Unknown => Some(put(s, owner, name, file)),
                    _ => None,
                }
            }
            Input::PutMany {
                owner,
                files,
                replace,
            } => {
                let outs: Vec<&Output> = match out {
                    Output::Batch(outs) if outs.len() == files.len() => outs.iter().collect(),
                    Output::Unknown => files.iter().map(|_| &Output::Unknown).collect(),
                    _ => return None,
                };
                let mut s = s.clone();
                for ((name, size, digest), out) in files.iter().zip(outs) {
                    let put = Input::Put {
                        owner: owner.clone(),
                        name: name.clone(),
                        size: *size,
                        digest: *digest,
                        replace: *replace,
                        // Batches carry none (as from pipes).
                        attrs: None,
                    };
                    s = self.step(&s, &put, out)?;
                }
                Some(s)
            }
            Input::Rm { owner, name } => {
                let exists = s.has_file(owner, name);
                let folder = s.is_folder(owner, name);
                match out {
                    Output::IsAFolder if folder => Some(s.clone()),
                    Output::NoSuchFile if !exists && !folder => Some(s.clone()),
                    Output::Unknown if !exists => Some(s.clone()),
                    Output::Deleted | Output::Unknown if exists => {
                        let mut s = s.clone();
                        s.files.remove(&(owner.clone(), name.clone()));
                        s.shares.retain(|(o, n, _)| !(o == owner && n == name));
                        Some(s)
                    }
                    _ => None,
                }
            }
            // The server tells a file from a folder when the request
            // arrives, and the log applies what it chose: the model follows
            // what the name is at the point it is placed.
            Input::RmFolder { owner, name } if s.has_file(owner, name) => {
                let rm = Input::Rm {
                    owner: owner.clone(),
                    name: name.clone(),
                };
                self.step(s, &rm, out)
            }
            Input::RmFolder { owner, name } => {
                let under = |n: &str| n.starts_with(&format!("{name}/"));
                let mut after = s.clone();
                after.files.retain(|(o, n), _| !(o == owner && under(n)));
                after.shares.retain(|(o, n, _)| !(o == owner && under(n)));
                after
                    .folder_shares
                    .retain(|(o, f, _)| !(o == owner && (f == name || under(f))));
                let nothing = after == *s;
                match out {
                    Output::NoSuchFile if nothing => Some(after),
                    Output::FolderDeleted if !nothing => Some(after),
                    Output::Unknown => Some(after),
                    _ => None,
                }
            }
            Input::Share {
                owner,
                name,
                grantee,
            } if !s.has_file(owner, name) => {
                let refusals = [
                    (Output::NoSuchFile, !s.is_folder(owner, name)),
                    (Output::NoSuchUser, !s.users.contains_key(grantee)),
                    (Output::ShareWithSelf, owner == grantee),
                ];
                if refusals.iter().any(|(_, r)| *r) {
                    let fits = unknown || refusals.iter().any(|(o, r)| *r && o == out);
                    return fits.then(|| s.clone());
                }
                match out {
                    Output::Shared | Output::Unknown => {
                        let mut s = s.clone();
                        (s.folder_shares).insert((owner.clone(), name.clone(), grantee.clone()));
                        Some(s)
                    }
                    _ => None,
                }
            }
            Input::Unshare {
                owner,
                name,
                grantee,
            } if !s.has_file(owner, name) => {
                let key = (owner.clone(), name.clone(), grantee.clone());
                let shared = s.folder_shares.contains(&key);
                let refusals = [
                    (Output::NoSuchUser, !s.users.contains_key(grantee)),
                    (Output::ShareWithSelf, owner == grantee),
                    (Output::NotShared, !shared && s.is_folder(owner, name)),
                    (Output::NoSuchFile, !shared && !s.is_folder(owner, name)),
                ];
                if refusals.iter().any(|(_, r)| *r) {
                    let fits = unknown || refusals.iter().any(|(o, r)| *r && o == out);
                    return fits.then(|| s.clone());
                }
                match out {
                    Output::Unshared | Output::Unknown => {
                        let mut s = s.clone();
                        s.folder_shares.remove(&key);
                        Some(s)
                    }
                    _ => None,
                }
            }
            Input::Share {
                owner,
                name,
                grantee,
            } => {
                let refusals = [
                    (Output::NoSuchFile, !s.has_file(owner, name)),
                    (Output::NoSuchUser, !s.users.contains_key(grantee)),
                    (Output::ShareWithSelf, owner == grantee),
                ];
                let refused = refusals.iter().any(|(_, r)| *r);
                if refused {
                    let fits = unknown || refusals.iter().any(|(o, r)| *r && o == out);
                    return fits.then(|| s.clone());
                }
                match out {
                    Output::Shared | Output::Unknown => {
                        let mut s = s.clone();
                        s.shares
                            .insert((owner.clone(), name.clone(), grantee.clone()));
                        Some(s)
                    }
                    _ => None,
                }
            }
            Input::Unshare {
                owner,
                name,
                grantee,
            } => {
                let key = (owner.clone(), name.clone(), grantee.clone());
                let refusals = [
                    (Output::NoSuchFile, !s.has_file(owner, name)),
                    (Output::NoSuchUser, !s.users.contains_key(grantee)),
                    (Output::ShareWithSelf, owner == grantee),
                    (Output::NotShared, !s.shares.contains(&key)),
                ];
                let refused = refusals.iter().any(|(_, r)| *r);
                if refused {
                    let fits = unknown || refusals.iter().any(|(o, r)| *r && o == out);
                    return fits.then(|| s.clone());
                }
                match out {
                    Output::Unshared | Output::Unknown => {
                        let mut s = s.clone();
                        s.shares.remove(&key);
                        Some(s)
                    }
                    _ => None,
                }
            }
            Input::DeleteAccount { user } => {
                let exists = s.users.contains_key(user);
                match out {
                    Output::AccountDeleted | Output::Unknown if exists => {
                        let mut s = s.clone();
                        s.users.remove(user);
                        s.deleted.insert(user.clone());
                        s.files.retain(|(o, _), _| o != user);
                        s.shares.retain(|(o, _, g)| o != user && g != user);
                        (s.folder_shares).retain(|(o, _, g)| o != user && g != user);
                        Some(s)
                    }
                    Output::Unknown => Some(s.clone()),
                    _ => None,
                }
            }
            Input::Ls { user } => match out {
                Output::Listing(lines) if *lines == s.listing(user) => Some(s.clone()),
                // A read that took effect or not changes nothing.
                Output::Unknown => Some(s.clone()),
                _ => None,
            },
        }
    }

    /// Parts are the connected components of users, two users linked by
    /// any share or unshare between them (answered or not). Sound: an
    /// operation touches only the state of its users ([`Input::users`]),
    /// except through shares: `ls` shows another owner's file only if it is
    /// shared with the caller, and its own files' grantees; a share
    /// `(owner, name, grantee)` exists only if a `Share` of it took effect
    /// (the history starts from the empty catalogue), and that operation
    /// links owner and grantee; deleting a file drops only shares of its
    /// owner's file, whose grantees are linked to the owner the same way.
    /// So the state splits into one independent object per component.
    fn partition(&self, history: &[Op<Input, Output>]) -> Vec<Vec<usize>> {
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for op in history {
            for u in op.input.users() {
                let n = names.len();
                names.entry(u).or_insert(n);
            }
        }
        let mut root: Vec<usize> = (0..names.len()).collect();
        fn find(root: &mut [usize], mut i: usize) -> usize {
            while root[i] != i {
                root[i] = root[root[i]];
                i = root[i];
            }
            i
        }
        for op in history {
            let ids: Vec<usize> = op.input.users().iter().map(|u| names[u]).collect();
            for w in ids.windows(2) {
                let (a, b) = (find(&mut root, w[0]), find(&mut root, w[1]));
                root[a] = b;
            }
        }
        let mut parts: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, op) in history.iter().enumerate() {
            let first = op.input.users()[0];
            let r = find(&mut root, names[first]);
            parts.entry(r).or_default().push(i);
        }
        parts.into_values().collect()
    }
}

fn put(s: &State, owner: &str, name: &str, file: File) -> State {
    let mut s = s.clone();
    s.files.insert((owner.to_string(), name.to_string()), file);
    s
}

/// What a file keeps of the attributes it was sent with: the `rwx` bits of
/// the mode, a time within its second's nanoseconds.
fn kept(a: FileAttrs) -> FileAttrs {
    FileAttrs {
        mode: a.mode & 0o777,
        mtime_nanos: a.mtime_nanos.min(999_999_999),
        ..a
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The password only as much as tells clients apart.
            Input::Register { user, password } => {
                write!(f, "register {user} (password {})", tail(password))
            }
            Input::Login { user, password } => {
                write!(f, "login {user} (password {})", tail(password))
            }
            Input::Put {
                owner,
                name,
                size,
                digest,
                replace,
                attrs,
            } => write!(
                f,
                "{owner}: put {name:?} ({size} bytes, {}){}{}",
                short(digest),
                if *replace { " --force" } else { "" },
                attrs.map_or(String::new(), |a| format!(" ({})", describe_attrs(&a)))
            ),
            Input::PutMany {
                owner,
                files,
                replace,
            } => {
                let each: Vec<String> = (files.iter())
                    .map(|(n, size, d)| format!("{n:?} ({size} bytes, {})", short(d)))
                    .collect();
                write!(
                    f,
                    "{owner}: put {}{}",
                    each.join(", "),
                    if *replace { " --force" } else { "" }
                )
            }
            Input::Rm { owner, name } => write!(f, "{owner}: rm {name:?}"),
            Input::RmFolder { owner, name } => write!(f, "{owner}: rm -r {name:?}"),
            Input::Share {
                owner,
                name,
                grantee,
            } => write!(f, "{owner}: share {name:?} with {grantee}"),
            Input::Unshare {
                owner,
                name,
                grantee,
            } => write!(f, "{owner}: unshare {name:?} from {grantee}"),
            Input::Ls { user } => write!(f, "{user}: ls"),
            Input::DeleteAccount { user } => write!(f, "{user}: account delete"),
        }
    }
}

/// The last four characters: enough to tell the scenario's passwords
/// apart, not the password.
fn tail(password: &str) -> String {
    let n = password.chars().count();
    let t: String = password.chars().skip(n.saturating_sub(4)).collect();
    format!("...{t}")
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Unknown => f.write_str("? (may or may not have taken effect)"),
            Output::Registered(id) => write!(f, "registered (user {id})"),
            Output::Taken => f.write_str("username taken"),
            Output::LoggedIn(id) => write!(f, "logged in (user {id})"),
            Output::BadCredentials => f.write_str("bad credentials"),
            Output::Stored { size, digest } => {
                write!(f, "stored ({size} bytes, {})", short(digest))
            }
            Output::Exists => f.write_str("exists"),
            Output::Conflict => f.write_str("a file or a folder, not both"),
            Output::Batch(outs) => {
                let each: Vec<String> = outs.iter().map(|o| o.to_string()).collect();
                write!(f, "[{}]", each.join("; "))
            }
            Output::IsAFolder => f.write_str("is a folder"),
            Output::Deleted => f.write_str("deleted"),
            Output::FolderDeleted => f.write_str("folder deleted"),
            Output::Shared => f.write_str("shared"),
            Output::Unshared => f.write_str("unshared"),
            Output::NotShared => f.write_str("not shared"),
            Output::NoSuchFile => f.write_str("no such file"),
            Output::NoSuchUser => f.write_str("no such user"),
            Output::ShareWithSelf => f.write_str("cannot share with self"),
            Output::AccountDeleted => f.write_str("account deleted"),
            Output::Listing(lines) => {
                let l: Vec<String> = lines
                    .iter()
                    .map(|(o, n, size, attrs, g)| {
                        let a =
                            attrs.map_or(String::new(), |a| format!(" ({})", describe_attrs(&a)));
                        match g.is_empty() {
                            true => format!("{o}/{n} {size}{a}"),
                            false => format!("{o}/{n} {size}{a} [{}]", g.join(",")),
                        }
                    })
                    .collect();
                write!(f, "[{}]", l.join("; "))
            }
            Output::Unexpected(what) => write!(f, "unexpected: {what}"),
        }
    }
}
