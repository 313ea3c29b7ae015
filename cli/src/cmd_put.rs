//! `ferry put PATH...`: uploads files, each under its own file name
//! (`--as NAME` names a single one; `-` is standard input, named with
//! `--as`), all through one session.
//!
//! A regular file of a real filesystem is read in place, through a
//! descriptor opened when its turn comes, with the size it had when the
//! command started. Anything whose size is not known in advance (standard
//! input, a FIFO, a character device, a `/proc` or `/sys` file, an
//! empty-looking file) is first read to its end into a private unnamed
//! file of the system's temporary directory, and that copy is sent: the
//! file stored is exactly what was read. A file whose size changes while
//! it is sent fails at its last block, and is then sent the same way, as a
//! copy read to its end. See docs/decisions.md.
//!
//! Every file is tried: one that fails (it exists, it cannot be read) is
//! reported and the others are still stored; the command then fails.
//!
//! Each regular file's modification time (to the nanosecond) and
//! permission bits (`rwx` for owner, group and others) are stored with it,
//! as they are when the command starts, for `ferry get` to give back.
//! Standard input, a FIFO or a device has none.
//!
//! `-r` stores a directory as a folder: every regular file under it, named
//! by the directory's own name and its path below it (`put -r photos`
//! stores `photos/2024/a.jpg`). Symbolic links are never followed (a link
//! could lead out of the tree, or round in a loop) and special files
//! (FIFOs, sockets, devices) are not read: both are skipped, each with a
//! warning. A folder exists only through its files, so an empty directory
//! is skipped too, and said so.

use crate::client_session::{self, unexpected, Plan, Progress};
use crate::error::CliError;
use crate::files_ui::{self, human_size, Bars};
use crate::{resume_file, say, ClientArgs};
use ferry_core::replication::entry::{BATCH_FILES, BATCH_NAME_BYTES};
use ferry_core::server::messages::{FileOutcome, Landed, Listed};
use ferry_core::server::OpError;
use ferry_core::server::{Request, Response};
use ferry_core::transfer::TransferError;
use ferry_core::FileAttrs;
use ferry_runtime_smol::files::{local, Source, CHANGED_WHILE_SENT};
use ferry_runtime_smol::Files;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// The files to upload, each stored under its file name; `-` reads
    /// standard input (name it with --as).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// The name to store a single file under [default: its file name], or
    /// with -r the folder to store a directory as [default: its name]. May
    /// be a path (`docs/2026/plan.txt`): no `..`, no `/` at either end.
    #[arg(long = "as", value_name = "NAME")]
    as_name: Option<String>,
    /// Store directories as folders: every regular file under them (links
    /// and special files are skipped, with a warning).
    #[arg(short, long)]
    recursive: bool,
    /// Replace a file of that name if there is one.
    #[arg(long)]
    force: bool,
    /// Chunks of 4 KiB in flight at once (1 is stop-and-wait).
    #[arg(long, value_name = "N", default_value_t = ferry_core::transfer::sender::DEFAULT_WINDOW,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    window: u64,
    #[command(flatten)]
    client: ClientArgs,
}

/// One file to upload.
struct Upload {
    /// As the user gave it, for messages.
    shown: String,
    path: PathBuf,
    name: String,
    size: u64,
    /// Sent through this descriptor, not opened again by path: standard
    /// input, or a copy read to its end (its size was not known).
    open: Option<Arc<File>>,
    /// Its modification time and mode, kept with it: a regular file's
    /// (standard input, a FIFO or a device has none worth keeping).
    attrs: Option<FileAttrs>,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let stdin = Path::new("-");
    if args.as_name.is_some() && args.paths.len() > 1 {
        return Err(CliError::Usage(
            "--as names a single file; give one PATH with it".into(),
        ));
    }
    if args.paths.iter().filter(|p| p.as_path() == stdin).count() > 1 {
        return Err(CliError::Usage(
            "standard input (-) can be read once".into(),
        ));
    }
    let mut uploads = Vec::with_capacity(args.paths.len());
    let mut tree = Tree::default();
    for path in &args.paths {
        if args.recursive && path.as_path() != stdin && path.is_dir() {
            let name = match args.as_name.as_deref() {
                Some(name) => files_ui::folder(name)?,
                None => folder_name(path)?,
            };
            walk(path, &name, 0, &mut tree);
            continue;
        }
        uploads.push(prepare(path, args.as_name.as_deref())?);
    }
    let json = args.client.json;
    for (path, why) in &tree.skipped {
        if !json {
            eprintln!("ferry: skipped {}: {why}", path.display());
        }
    }
    uploads.append(&mut tree.uploads);
    let mut names: HashMap<String, String> = HashMap::new();
    for upload in &uploads {
        if let Some(other) = names.insert(upload.name.clone(), upload.shown.clone()) {
            return Err(CliError::Usage(format!(
                "{other} and {} would both be stored as {}; upload one of them with --as NAME",
                upload.shown,
                files_ui::shown(&upload.name)
            )));
        }
    }
    if uploads.is_empty() && tree.failed.is_empty() {
        return Err(CliError::Failed(
            "nothing to store: the folders hold no regular file".into(),
        ));
    }
    let token = files_ui::token()?;
    let mut answers = upload(&args, &token, &uploads)?;
    // Those that grew or shrank while they were sent, and were not
    // stored: sent again, as copies read to their ends.
    let changed: Vec<usize> = (0..uploads.len())
        .filter(|&i| changed_while_sent(answers.get(i)) && uploads[i].open.is_none())
        .collect();
    if !changed.is_empty() {
        let mut again = Vec::new();
        for &i in &changed {
            let u = &uploads[i];
            eprintln!(
                "ferry: {} {CHANGED_WHILE_SENT}; sending a copy read to its end",
                u.shown
            );
            let mut file = File::open(&u.path)
                .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", u.shown)))?;
            let (file, size) = spool(&mut file, &u.shown)?;
            // Its time as it is now, after the change.
            let attrs = std::fs::metadata(&u.path).ok().and_then(|m| attrs_of(&m));
            again.push(Upload {
                shown: u.shown.clone(),
                path: u.path.clone(),
                name: u.name.clone(),
                size,
                open: Some(Arc::new(file)),
                attrs,
            });
        }
        let retried = upload(&args, &token, &again)?;
        for (&i, answer) in changed.iter().zip(retried) {
            if let Some(slot) = answers.get_mut(i) {
                *slot = answer;
            }
        }
    }
    let unchanged = stored_already(&args, &token, &uploads, &answers);
    report(&uploads, answers, &unchanged, tree, args.client.json)
}

/// Of the files refused because their name is taken, those stored as they
/// are here: same size, modification time and mode as the file stored
/// under their name (the quick check rsync makes). What a `put` cut off
/// stored before, run again, is then done, not failed. One listing per
/// folder of theirs, asked only when a name was taken; if it cannot be
/// had, none are.
fn stored_already(
    args: &Args,
    token: &ferry_core::accounts::token::SessionToken,
    uploads: &[Upload],
    answers: &[Response],
) -> HashSet<usize> {
    let taken: Vec<usize> = (0..uploads.len())
        .filter(|&i| {
            uploads[i].attrs.is_some()
                && matches!(
                    answers.get(i),
                    Some(Response::Failed(
                        OpError::FileExists | OpError::Transfer(TransferError::Exists)
                    ))
                )
        })
        .collect();
    if taken.is_empty() {
        return HashSet::new();
    }
    // Each name's first folder, listed whole; a name outside any: all.
    let roots: BTreeSet<Option<&str>> = (taken.iter())
        .map(|&i| uploads[i].name.split_once('/').map(|(root, _)| root))
        .collect();
    let requests: Vec<Request> = match roots.contains(&None) {
        true => vec![Request::List],
        false => (roots.into_iter().flatten())
            .map(|root| Request::ListUnder {
                prefix: root.to_string(),
            })
            .collect(),
    };
    let plan = Plan::new(&args.client);
    let Ok(answers) = client_session::run_all_as(&args.client, plan, token.clone(), requests)
    else {
        return HashSet::new();
    };
    let mut listed: HashMap<String, Listed> = HashMap::new();
    for answer in answers {
        if let Response::Listing(files) = answer {
            let mine = files.into_iter().filter(|f| f.owner == token.username);
            listed.extend(mine.map(|f| (f.name.clone(), f)));
        }
    }
    (taken.into_iter())
        .filter(|&i| {
            let u = &uploads[i];
            listed
                .get(&u.name)
                .is_some_and(|f| f.size == u.size && f.attrs.is_some() && f.attrs == u.attrs)
        })
        .collect()
}

/// What `-r` found under its directories.
#[derive(Default)]
struct Tree {
    uploads: Vec<Upload>,
    /// Not stored, and why (a link, a special file, an empty directory).
    skipped: Vec<(PathBuf, String)>,
    /// Files that cannot be stored (an unreadable file, a bad name): each
    /// reported as a failure of the command, the others still tried.
    failed: Vec<(String, CliError)>,
}

/// The folder name a directory is stored under: its name as given (a link
/// given on the command line keeps its own name), or for `.` and `..` the
/// name of what they are.
fn folder_name(dir: &Path) -> Result<String, CliError> {
    let real = match dir.file_name() {
        Some(_) => dir.to_path_buf(),
        None => std::fs::canonicalize(dir)
            .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", dir.display())))?,
    };
    let name = real.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        CliError::Failed(format!(
            "{} has no usable name to store it under; give one with --as NAME",
            dir.display()
        ))
    })?;
    files_ui::name(name)
}

/// Every regular file under `dir`, as uploads named `folder/...`; in name
/// order, so that a tree is stored (and reported) the same way each time.
/// Returns how many files it found.
fn walk(dir: &Path, folder: &str, depth: usize, tree: &mut Tree) -> usize {
    let fail = |tree: &mut Tree, path: &Path, e: CliError| {
        tree.failed.push((path.display().to_string(), e));
    };
    if depth >= ferry_core::names::MAX_DEPTH {
        let e = CliError::Failed(format!(
            "folders are at most {} deep; nothing under it was stored",
            ferry_core::names::MAX_DEPTH
        ));
        fail(tree, dir, e);
        return 0;
    }
    let entries = match std::fs::read_dir(dir).and_then(|d| d.collect::<Result<Vec<_>, _>>()) {
        Ok(entries) => entries,
        Err(e) => {
            let e = CliError::Failed(format!("cannot read the directory: {e}"));
            fail(tree, dir, e);
            return 0;
        }
    };
    let mut entries: Vec<_> = entries.into_iter().map(|e| (e.file_name(), e)).collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut found = 0;
    for (file_name, entry) in entries {
        let path = entry.path();
        let Some(component) = file_name.to_str() else {
            let e = CliError::Failed("its name is not valid UTF-8".into());
            fail(tree, &path, e);
            continue;
        };
        let name = format!("{folder}/{}", ferry_core::names::normalize(component));
        // The entry's own type: a link is a link, whatever it points to.
        let kind = match entry.file_type() {
            Ok(kind) => kind,
            Err(e) => {
                fail(
                    tree,
                    &path,
                    CliError::Failed(format!("cannot read it: {e}")),
                );
                continue;
            }
        };
        if kind.is_symlink() {
            let why = "a symbolic link, not followed".to_string();
            tree.skipped.push((path, why));
        } else if kind.is_dir() {
            if let Err(e) = files_ui::name(&name) {
                fail(tree, &path, e);
                continue;
            }
            let below = walk(&path, &name, depth + 1, tree);
            if below == 0 {
                let why = "no regular file under it (a folder exists through its files)";
                tree.skipped.push((path, why.to_string()));
            }
            found += below;
        } else if kind.is_file() {
            match prepare(&path, Some(&name)) {
                Ok(upload) => {
                    tree.uploads.push(upload);
                    found += 1;
                }
                Err(e) => fail(tree, &path, e),
            }
        } else {
            let why = "not a regular file (a FIFO, socket or device), not read".to_string();
            tree.skipped.push((path, why));
        }
    }
    found
}

/// Looks at `path` before anything is sent: what it will be stored as, and
/// how big it is (a source of unknown size is read to its end now).
fn prepare(path: &Path, as_name: Option<&str>) -> Result<Upload, CliError> {
    let is_stdin = path == Path::new("-");
    let shown = if is_stdin {
        "standard input".to_string()
    } else {
        path.display().to_string()
    };
    let name = match as_name {
        Some(name) => name.to_string(),
        None if is_stdin => {
            return Err(CliError::Usage(
                "standard input has no name; give it one with --as NAME".into(),
            ))
        }
        None => path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| {
                CliError::Failed(format!(
                    "{shown} has no usable file name; give one: ferry put {shown} --as NAME"
                ))
            })?,
    };
    let name = files_ui::name(&name)?;
    let mut attrs = None;
    let file = if is_stdin {
        use std::os::fd::AsFd;
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .map_err(|e| CliError::Failed(format!("cannot read standard input: {e}")))?
    } else {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CliError::Failed(format!("{shown}: no such file")),
            _ => CliError::Failed(format!("cannot read {shown}: {e}")),
        })?;
        if meta.is_dir() {
            return Err(CliError::Failed(format!(
                "{shown} is a directory; store it as a folder with: ferry put -r {shown}"
            )));
        }
        attrs = attrs_of(&meta);
        // Opening it now turns an unreadable file into a clear error
        // before anything is sent. (A FIFO waits here for its writer, as
        // any reader of one does.)
        File::open(path).map_err(|e| CliError::Failed(format!("cannot read {shown}: {e}")))?
    };
    let known = local::size_known(&file)
        .map_err(|e| CliError::Failed(format!("cannot read {shown}: {e}")))?;
    let (size, open) = match known {
        // Standard input (a file redirected in) has no path to open again.
        Some(size) if is_stdin => (size, Some(Arc::new(file))),
        // Closed until its turn: a command of many files holds few open.
        Some(size) => (size, None),
        None => {
            let mut file = file;
            let (copy, size) = spool(&mut file, &shown)?;
            (size, Some(Arc::new(copy)))
        }
    };
    Ok(Upload {
        shown,
        path: path.to_path_buf(),
        name,
        size,
        open,
        attrs,
    })
}

/// What is kept of a source file's metadata: a regular file's modification
/// time and permission bits (set-ID and sticky bits dropped; see
/// `ferry_core::file_attrs`).
fn attrs_of(meta: &std::fs::Metadata) -> Option<FileAttrs> {
    use std::os::unix::fs::MetadataExt;
    if !meta.is_file() {
        return None;
    }
    let nanos = u32::try_from(meta.mtime_nsec()).unwrap_or(0);
    Some(FileAttrs::new(meta.mtime(), nanos, meta.mode()))
}

fn changed_while_sent(answer: Option<&Response>) -> bool {
    matches!(answer, Some(Response::Failed(OpError::Transfer(TransferError::Io { detail })))
        if detail.contains(CHANGED_WHILE_SENT))
}

/// Says what became of each file (and of those `-r` could not store or
/// skipped); fails if any was not stored.
fn report(
    uploads: &[Upload],
    answers: Vec<Response>,
    unchanged: &HashSet<usize>,
    tree: Tree,
    json: bool,
) -> Result<(), CliError> {
    let early = tree.failed.len();
    let mut failed = tree.failed;
    let mut out = crate::json::Put {
        skipped: (tree.skipped.iter())
            .map(|(path, why)| crate::json::Skipped {
                path: path.display().to_string(),
                reason: why.clone(),
            })
            .collect(),
        ..Default::default()
    };
    let mut answers = answers.into_iter();
    for (i, u) in uploads.iter().enumerate() {
        let answer = answers.next();
        if unchanged.contains(&i) {
            let at = u.path.display().to_string();
            let why = "stored already, with the same size and time";
            files_ui::unchanged(&mut out.unchanged, json, &u.name, at, why);
            continue;
        }
        match answer {
            Some(Response::File(FileOutcome::Stored { size, digest })) if json => {
                out.stored.push(crate::json::Stored {
                    name: u.name.clone(),
                    path: u.path.display().to_string(),
                    size,
                    digest: digest.iter().map(|b| format!("{b:02x}")).collect(),
                })
            }
            Some(Response::File(FileOutcome::Stored { size, .. })) => say(format_args!(
                "stored {} ({}, {size} bytes)",
                files_ui::shown(&u.name),
                human_size(size)
            )),
            Some(Response::Failed(e)) => failed.push((u.shown.clone(), CliError::op(&e))),
            Some(other) => failed.push((u.shown.clone(), unexpected(other))),
            None => failed.push((u.shown.clone(), CliError::Failed("not sent".into()))),
        }
    }
    if json {
        let by_shown: HashMap<&str, &Upload> =
            uploads.iter().map(|u| (u.shown.as_str(), u)).collect();
        out.failed = failed
            .iter()
            .map(|(shown, e)| {
                let path = by_shown.get(shown.as_str()).map(|u| u.path.display());
                let file = path.map_or_else(|| shown.clone(), |p| p.to_string());
                crate::json::Failed::new(file, e)
            })
            .collect();
        crate::json::print(&out);
    }
    files_ui::outcome(uploads.len() + early, failed, "stored", json)
}

/// Reads `file` to its end into a private unnamed copy (see the module
/// docs), in the system's temporary directory.
fn spool(file: &mut File, shown: &str) -> Result<(File, u64), CliError> {
    let dir = std::env::temp_dir();
    local::spool(file, &dir).map_err(|e| {
        CliError::Failed(format!(
            "cannot copy {shown} to {} before sending it: {e}",
            dir.display()
        ))
    })
}

/// Uploads `uploads` through one session; returns an answer per upload
/// (all of them: a failed one does not stop the others). A single file is
/// one upload; several go as batches (`UploadMany`), each stored as one
/// transaction.
fn upload(
    args: &Args,
    token: &ferry_core::accounts::token::SessionToken,
    uploads: &[Upload],
) -> Result<Vec<Response>, CliError> {
    let by_name: HashMap<&str, &Upload> = uploads.iter().map(|u| (u.name.as_str(), u)).collect();
    // A single file the server can keep part of if it is cut off: where
    // it goes is noted, and a try of it that was cut off goes there first
    // (see `resume_file`). A batch's files are not resumed.
    let resumable = match uploads {
        [u] if u.size > ferry_core::transfer::BLOCK_BYTES => Some(u),
        _ => None,
    };
    let user = token.username.clone();
    let bars = Bars::default();
    // A batch's bar counts the bytes of all its files.
    let moved = std::cell::RefCell::new(HashMap::<u64, u64>::new());
    let batch_total = std::cell::Cell::new(0);
    let mut progress = |p| match p {
        Progress::File { file, bytes, .. } => {
            let mut moved = moved.borrow_mut();
            moved.insert(file, bytes);
            let bytes = moved.values().sum();
            let total = batch_total.get();
            bars.show(Progress::Transfer { bytes, total });
        }
        Progress::Session { addr, .. } => {
            if let Some(u) = resumable {
                resume_file::save(&resume_file::Upload {
                    user: user.clone(),
                    name: u.name.clone(),
                    size: u.size,
                    server: addr,
                });
            }
        }
        Progress::Resumed { bytes, total } => {
            if let Some(u) = resumable {
                bars.say(&format!(
                    "{}: resuming at {} of {} (the server kept what arrived before)",
                    u.shown,
                    human_size(bytes),
                    human_size(total)
                ));
            }
            bars.show(Progress::Resumed { bytes, total });
        }
        Progress::StartedOver { bytes } => {
            if let Some(u) = resumable {
                bars.say(&format!(
                    "{}: the {} the server kept of an earlier try are not this file's \
                     (it changed since); starting over",
                    u.shown,
                    human_size(bytes)
                ));
            }
            bars.show(Progress::StartedOver { bytes });
        }
        p => bars.show(p),
    };
    let mut plan = Plan::new(&args.client);
    plan.cfg.window = args.window;
    if let Some(u) = resumable {
        plan.cfg.prefer = resume_file::server_for(&user, &u.name, u.size);
    }
    plan.keep_going = true;
    plan.files = Some(Box::new(|request: &Request| match request {
        Request::Upload { name, .. } => {
            let u = by_name.get(name.as_str())?;
            bars.start(u.size, name);
            let file = match &u.open {
                Some(file) => Arc::clone(file),
                None => match File::open(&u.path) {
                    Ok(file) => Arc::new(file),
                    // Gone since: reading it fails the upload with the reason.
                    Err(_) => return Some(Ok(Files::source(&u.path))),
                },
            };
            Some(Ok(Files::source_file(&u.path, file, u.size)))
        }
        Request::UploadMany { files, .. } => {
            let total = files.iter().map(|(_, size)| size).sum();
            bars.start(total, &format!("{} files", files.len()));
            batch_total.set(total);
            moved.borrow_mut().clear();
            // Each opened by its path when its turn comes (a batch holds
            // few open), its size checked at its end.
            let sources = (files.iter())
                .filter_map(|(name, _)| by_name.get(name.as_str()))
                .map(|u| Source {
                    path: u.path.clone(),
                    file: u.open.clone(),
                    size: Some(u.size),
                })
                .collect();
            Some(Ok(Files::sources(sources)))
        }
        _ => None,
    }));
    plan.progress = Some(&mut progress);
    let requests: Vec<Request> = if uploads.len() == 1 {
        (uploads.iter())
            .map(|u| Request::Upload {
                name: u.name.clone(),
                size: u.size,
                replace: args.force,
                attrs: u.attrs,
            })
            .collect()
    } else {
        batches(uploads)
            .into_iter()
            .map(|files| Request::UploadMany {
                attrs: (files.iter())
                    .map(|(name, _)| by_name.get(name.as_str()).and_then(|u| u.attrs))
                    .collect(),
                files,
                replace: args.force,
            })
            .collect()
    };
    // How many files each request carries.
    let covers: Vec<usize> = (requests.iter())
        .map(|r| match r {
            Request::UploadMany { files, .. } => files.len(),
            _ => 1,
        })
        .collect();
    let answers = client_session::run_all_as(&args.client, plan, token.clone(), requests);
    bars.finish();
    let stored = |a: &Response| matches!(a, Response::File(FileOutcome::Stored { .. }));
    if let (Some(u), Ok([answer])) = (resumable, answers.as_deref()) {
        if stored(answer) {
            resume_file::forget(&user, &u.name);
        }
    }
    // One answer per file, in order: a batch answered whole (refused, or
    // failed) is that answer for each of its files.
    let mut per_file = Vec::with_capacity(uploads.len());
    for (answer, n) in answers?.into_iter().zip(covers) {
        match answer {
            Response::Batch(outcomes) if outcomes.len() == n => {
                per_file.extend(outcomes.into_iter().map(|o| match o {
                    Landed::Stored { size, digest } => {
                        Response::File(FileOutcome::Stored { size, digest })
                    }
                    Landed::Failed(e) => Response::Failed(e),
                }))
            }
            Response::Batch(outcomes) => {
                let reason = format!(
                    "the server answered {} of a batch of {n} files",
                    outcomes.len()
                );
                let e = OpError::Unavailable { reason };
                per_file.extend(std::iter::repeat_n(Response::Failed(e), n));
            }
            other => per_file.extend(std::iter::repeat_n(other, n)),
        }
    }
    Ok(per_file)
}

/// `uploads` cut into batches a server takes: at most
/// [`BATCH_FILES`] files and [`BATCH_NAME_BYTES`] of names each.
fn batches(uploads: &[Upload]) -> Vec<Vec<(String, u64)>> {
    let mut all = Vec::new();
    let mut batch: Vec<(String, u64)> = Vec::new();
    let mut name_bytes = 0;
    for u in uploads {
        let full = batch.len() == BATCH_FILES || name_bytes + u.name.len() > BATCH_NAME_BYTES;
        if full && !batch.is_empty() {
            all.push(std::mem::take(&mut batch));
            name_bytes = 0;
        }
        name_bytes += u.name.len();
        batch.push((u.name.clone(), u.size));
    }
    if !batch.is_empty() {
        all.push(batch);
    }
    all
}
