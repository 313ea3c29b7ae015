//! `ferry get NAME... [DEST]`: downloads files of one's own, or shared by
//! `--owner`, all through one session: one NAME to DEST (a file, or a
//! directory to put it in; `-` is standard output), several into the
//! directory DEST. Without DEST, into the current directory.
//!
//! The content goes to an unnamed temporary file in DEST's directory
//! (`O_TMPFILE`; where the filesystem cannot, a hidden
//! `.DEST.ferry-partial-PID`) and is linked in as DEST only once it is
//! complete, its digest checked and made durable. A failed or interrupted
//! download leaves nothing (an unnamed file goes with the process, even on
//! `kill -9`; a named one is removed on Ctrl-C or SIGTERM, and by the next
//! `get` into that directory after `kill -9`); DEST is never half written.
//!
//! An existing DEST is replaced only with `--force`, and then only if it
//! is a regular file (the new file keeps its mode and owner) or a symbolic
//! link (the link is replaced, never followed): a directory, a FIFO, a
//! socket or a device is refused before anything is downloaded, and again
//! just before the rename. See docs/security.md.
//!
//! A file is given the modification time and the mode (the `rwx` bits,
//! exactly, whatever the umask: `cp -p`'s way) it was stored with, if it
//! was stored with them, unless `--no-preserve`: before it is made durable
//! and linked in, so its name never shows it otherwise. (A file replaced
//! with `--force` keeps its own mode, below, and takes only the time.) A file stored
//! without them (from a pipe, or before they were kept), and every file
//! under `--no-preserve`, has the time of its download and the mode a new
//! file gets (0666 less the umask; a replaced file's with `--force`).
//! Standard output takes neither.
//!
//! `-r` downloads folders: each NAME's files into DEST/<NAME's last
//! component>/..., making the directories. The folder is listed in one
//! session and its files downloaded in the next. Every name the server
//! lists is checked again here, as a path of safe components under the
//! folder asked for, before it becomes a local path: a server cannot make
//! `get -r` write outside DEST.

use crate::client_session::{self, unexpected, Plan, Progress};
use crate::error::CliError;
use crate::files_ui::{self, human_size, Bars};
use crate::{say, ClientArgs};
use ferry_core::accounts::token::SessionToken;
use ferry_core::replication::entry::{BATCH_FILES, BATCH_NAME_BYTES};
use ferry_core::server::messages::{Landed, Listed};
use ferry_core::server::{OpError, Request, Response};
use ferry_core::transfer::TransferError;
use ferry_runtime_smol::Files;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The files' names, then where to put them: one file to DEST (a file,
    /// a directory to put it in, or `-` for standard output), several into
    /// the directory DEST [default: the current directory]. With -r, the
    /// folders' names, each downloaded into DEST/NAME.
    #[arg(required = true, value_name = "NAME... [DEST]")]
    items: Vec<String>,
    /// Whose files they are, if not yours (they must be shared with you).
    #[arg(long, value_name = "USER")]
    owner: Option<String>,
    /// Replace a destination that exists.
    #[arg(long)]
    force: bool,
    /// Download folders: every file under each NAME, into DEST/NAME/...
    #[arg(short, long)]
    recursive: bool,
    /// Do not give the files the modification time and mode they were
    /// stored with: they get the time of the download and the default
    /// mode (0666 less the umask).
    #[arg(long)]
    no_preserve: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// One file to download.
struct Download {
    name: String,
    /// Where it goes (for standard output: a private file, copied out once
    /// complete and checked).
    dest: PathBuf,
    shown: String,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let (names, dest) = match args.items.as_slice() {
        [name] => (vec![name.clone()], None),
        [names @ .., dest] => (names.to_vec(), Some(dest.clone())),
        [] => {
            return Err(CliError::Usage(
                "give the name of a file to download".into(),
            ))
        }
    };
    if args.recursive {
        return run_folders(&args, &names, dest.as_deref());
    }
    // A bad name names no file; checking it also keeps a default
    // destination inside the current directory.
    let names = names
        .iter()
        .map(|n| files_ui::name(n))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = HashSet::new();
    if let Some(twice) = names.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(CliError::Usage(format!(
            "{} is named twice",
            files_ui::shown(twice)
        )));
    }
    // A file in a folder lands under its own name, as `cp` would put it.
    let mut leaves: HashMap<&str, &str> = HashMap::new();
    for n in &names {
        if let Some(other) = leaves.insert(last_component(n), n) {
            return Err(CliError::Usage(format!(
                "{} and {} would both be written as {}; get them one at a time, or their folder with -r",
                files_ui::shown(other),
                files_ui::shown(n),
                files_ui::shown(last_component(n))
            )));
        }
    }
    let to_stdout = dest.as_deref() == Some("-");
    if to_stdout && names.len() > 1 {
        return Err(CliError::Usage(
            "standard output (-) takes one file; give a directory for several".into(),
        ));
    }
    let dir = match &dest {
        Some(d) if names.len() > 1 => {
            let dir = PathBuf::from(d);
            if !dir.is_dir() {
                return Err(CliError::Failed(format!(
                    "{d} is not a directory; several files go into a directory"
                )));
            }
            Some(dir)
        }
        _ => None,
    };
    let stdout_copy = match to_stdout {
        true => Some(private_copy_path()?),
        false => None,
    };
    let mut downloads = Vec::with_capacity(names.len());
    for name in names {
        let path = match (&dir, &dest, &stdout_copy) {
            (_, _, Some(copy)) => copy.clone(),
            (Some(dir), _, _) => dir.join(last_component(&name)),
            (None, Some(d), _) if Path::new(d).is_dir() => Path::new(d).join(last_component(&name)),
            (None, Some(d), _) => PathBuf::from(d),
            (None, None, _) => PathBuf::from(last_component(&name)),
        };
        let shown = if to_stdout {
            "standard output".to_string()
        } else {
            path.display().to_string()
        };
        if !to_stdout {
            check_destination(&path, &shown, args.force)?;
        }
        downloads.push(Download {
            name,
            dest: path,
            shown,
        });
    }
    let token = files_ui::token()?;
    fetch(&args, token, downloads, Vec::new(), stdout_copy, to_stdout)
}

/// Downloads `downloads` (their destinations checked) and says how it
/// went, and of `unchanged` that they were there already.
fn fetch(
    args: &Args,
    token: SessionToken,
    downloads: Vec<Download>,
    unchanged: Vec<Download>,
    stdout_copy: Option<PathBuf>,
    to_stdout: bool,
) -> Result<(), CliError> {
    use ferry_runtime_smol::files::{local, part_path, partial_path};
    // What a `get` killed with -9 left here where it had to use a named
    // temporary file that cannot be resumed (an older ferry, or standard
    // output's copy on a filesystem without O_TMPFILE).
    let mut dirs: Vec<&Path> = downloads
        .iter()
        .map(|d| d.dest.parent().unwrap_or(Path::new("")))
        .collect();
    dirs.dedup();
    for dir in dirs {
        local::remove_stale_partials(dir);
    }
    // Each download's partial file: a `get` cut off leaves it, and the
    // next resumes from it. Each is made and locked only while its own
    // request runs (a lock held for every file of the command, a
    // descriptor each, ran a folder of thousands out of descriptors, and
    // a `get -r` killed left an empty partial file for every file). Those
    // there already are checked now, so that a `get` writing one of them
    // is told before anything moves.
    let parts: Vec<PathBuf> = match to_stdout {
        true => Vec::new(),
        false => downloads.iter().map(|d| part_path(&d.dest)).collect(),
    };
    for part in &parts {
        local::check_part(part).map_err(CliError::Failed)?;
    }
    let mut cleanup: Vec<PathBuf> = downloads.iter().map(|d| partial_path(&d.dest)).collect();
    cleanup.extend(stdout_copy.clone());
    cleanup.extend(
        stdout_copy
            .as_ref()
            .and_then(|c| c.parent())
            .map(Path::to_path_buf),
    );
    remove_on_interrupt(cleanup, parts.clone());
    let answers = match downloads.is_empty() {
        // Every file was there already: nothing to ask.
        true => Ok(Vec::new()),
        false => download(args, token, &downloads, to_stdout),
    };
    // A partial file is kept only for a download that was cut off with
    // something in it; a download that failed for good leaves none.
    for (i, part) in parts.iter().enumerate() {
        let answer = answers
            .as_ref()
            .ok()
            .and_then(|a| a.get(i))
            .and_then(Option::as_ref);
        let held = std::fs::symlink_metadata(part).map_or(0, |m| m.len());
        if held > 0 && was_cut_off(answer) {
            eprintln!(
                "ferry: {} of {} kept in {}; run the same command again to resume",
                human_size(held),
                files_ui::shown(&downloads[i].name),
                part.display()
            );
        } else {
            let _ = std::fs::remove_file(part);
        }
    }
    for partial in downloads.iter().map(|d| partial_path(&d.dest)) {
        let _ = std::fs::remove_file(partial);
    }
    let json = args.client.json;
    let result =
        answers.and_then(|answers| report(&downloads, &unchanged, answers, to_stdout, json));
    if let Some(copy) = &stdout_copy {
        let _ = std::fs::remove_file(copy);
        if let Some(dir) = copy.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
    result
}

/// `get -r NAME... [DEST]`: lists each folder, checks every name listed,
/// makes the directories, then downloads the files.
fn run_folders(args: &Args, names: &[String], dest: Option<&str>) -> Result<(), CliError> {
    let folders = names
        .iter()
        .map(|n| files_ui::folder(n))
        .collect::<Result<Vec<_>, _>>()?;
    let dest = PathBuf::from(dest.unwrap_or("."));
    if dest.as_os_str() == "-" || !dest.is_dir() {
        return Err(CliError::Failed(format!(
            "{} is not a directory; folders go into a directory",
            dest.display()
        )));
    }
    let token = files_ui::token()?;
    let owner = match &args.owner {
        Some(o) => ferry_core::accounts::username::normalize(o)
            .map_err(|e| CliError::Failed(format!("no such user {}: {e}", files_ui::shown(o))))?,
        None => token.username.clone(),
    };
    let requests = (folders.iter())
        .map(|f| Request::ListUnder { prefix: f.clone() })
        .collect();
    let plan = Plan::new(&args.client);
    let answers = client_session::run_all_as(&args.client, plan, token.clone(), requests)?;
    let mut seen = std::collections::HashSet::new();
    let (mut wanted, mut unchanged, mut differing) = (Vec::new(), Vec::new(), Vec::new());
    for (folder, answer) in folders.iter().zip(answers) {
        let listed = match answer {
            Response::Listing(files) => files,
            Response::Failed(e) => return Err(CliError::op(&e)),
            other => return Err(unexpected(other)),
        };
        let mine: Vec<Listed> = (listed.into_iter()).filter(|f| f.owner == owner).collect();
        if mine.is_empty() {
            return Err(CliError::Refused {
                kind: crate::error::Refusal::NotFound,
                message: format!(
                    "no folder {} (no file under it, or none shared with you)",
                    files_ui::shown(folder)
                ),
            });
        }
        let root = dest.join(last_component(folder));
        for f in mine {
            // Folders that overlap (`photos photos/2024`) list a file twice.
            if !seen.insert(f.name.clone()) {
                continue;
            }
            let path = local_path(&root, folder, &f.name)?;
            let shown = path.display().to_string();
            let download = Download {
                name: f.name.clone(),
                dest: path,
                shown,
            };
            // A destination there already is left alone if it is this
            // file as `get` writes it (what an interrupted `get -r` of
            // the folder finished), replaced with --force, else refused.
            match download.dest.symlink_metadata() {
                Ok(meta) if !args.force && is_as_listed(&meta, &f) => unchanged.push(download),
                Ok(_) if !args.force => differing.push(download),
                _ => wanted.push(download),
            }
        }
    }
    if let Some(first) = differing.first() {
        return Err(CliError::Refused {
            kind: crate::error::Refusal::Conflict,
            message: format!(
                "{} exists and is not the file on the server{}; use --force to replace {}",
                first.shown,
                match differing.len() {
                    1 => String::new(),
                    n => format!(" (nor are {} more)", n - 1),
                },
                if differing.len() == 1 { "it" } else { "them" }
            ),
        });
    }
    let mut downloads = Vec::with_capacity(wanted.len());
    for d in wanted {
        if let Some(dir) = d.dest.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::Failed(format!("cannot make {}: {e}", dir.display())))?;
        }
        check_destination(&d.dest, &d.shown, args.force)?;
        downloads.push(d);
    }
    fetch(args, token, downloads, unchanged, None, false)
}

/// Is the local file `meta` describes the listed file as `get` writes it:
/// a regular file of its size and modification time (to the nanosecond)?
/// The quick check rsync makes; a file stored without a time never is.
fn is_as_listed(meta: &std::fs::Metadata, f: &Listed) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(attrs) = f.attrs else {
        return false;
    };
    meta.is_file()
        && meta.len() == f.size
        && meta.mtime() == attrs.mtime_secs
        && u32::try_from(meta.mtime_nsec()).ok() == Some(attrs.mtime_nanos)
}

/// The last component of a checked path.
fn last_component(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Where `name`, listed by the server as under `folder`, goes below
/// `root`: refused unless it is a path of safe components (no `..`, no
/// `/` at either end, nothing empty, nothing invisible) inside the folder
/// asked for. The server is not trusted to have checked.
fn local_path(root: &Path, folder: &str, name: &str) -> Result<PathBuf, CliError> {
    let refuse = |why: String| {
        CliError::Failed(format!(
            "the server listed {} under {}, which is refused: {why}",
            files_ui::shown(name),
            files_ui::shown(folder)
        ))
    };
    ferry_core::names::check_path(name).map_err(refuse)?;
    if !ferry_core::names::is_under(name, folder) {
        return Err(refuse("it is not under that folder".into()));
    }
    let mut path = root.to_path_buf();
    for component in name[folder.len() + 1..].split('/') {
        path.push(component);
    }
    Ok(path)
}

/// Where a download to standard output is kept until it is complete and
/// checked: in a directory of this process's own in the temporary
/// directory, which only the user may enter (the content may be private).
fn private_copy_path() -> Result<PathBuf, CliError> {
    use std::os::unix::fs::DirBuilderExt;
    let mut tag = [0u8; 8];
    getrandom::fill(&mut tag)
        .map_err(|e| CliError::Failed(format!("no randomness from the system: {e}")))?;
    let dir = std::env::temp_dir().join(format!(
        ".ferry-stdout-{}-{:016x}",
        std::process::id(),
        u64::from_le_bytes(tag)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| CliError::Failed(format!("cannot make {}: {e}", dir.display())))?;
    Ok(dir.join("content"))
}

/// Refuses, before anything is downloaded, a destination that may not be
/// written: one that exists (without `--force`), one `--force` may not
/// replace, one whose directory is missing.
fn check_destination(dest: &Path, shown: &str, force: bool) -> Result<(), CliError> {
    if !force && dest.symlink_metadata().is_ok() {
        return Err(CliError::Failed(format!(
            "{shown} exists; use --force to replace it"
        )));
    }
    if force {
        check_replaceable(dest)?;
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(CliError::Failed(format!(
                "cannot write {shown}: {} is not a directory",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Was the download that got `answer` (none: the session was lost before
/// it) cut off, rather than refused or damaged: worth resuming?
fn was_cut_off(answer: Option<&Response>) -> bool {
    match answer {
        None => true,
        Some(Response::Failed(OpError::Transfer(e))) => {
            matches!(e, TransferError::Timeout | TransferError::Cancelled)
        }
        Some(Response::Failed(OpError::Unavailable { .. })) => true,
        Some(_) => false,
    }
}

/// Downloads `downloads` through one session; returns an answer per
/// download, in order (`None`: never asked, the session was lost first). A
/// failed one does not stop the others. One file goes alone, as does one
/// with a partial file kept from an interrupted try (it resumes); the
/// others go as batches (`DownloadMany`): small files back to back, with
/// no round trip of their own.
fn download(
    args: &Args,
    token: SessionToken,
    downloads: &[Download],
    to_stdout: bool,
) -> Result<Vec<Option<Response>>, CliError> {
    let by_name: HashMap<&str, &Download> =
        downloads.iter().map(|d| (d.name.as_str(), d)).collect();
    let bars = Bars::default();
    let current = std::cell::RefCell::new(String::new());
    // A batch's bar counts the bytes of all its files (their sizes are
    // learnt as they are offered).
    let moved = std::cell::RefCell::new(HashMap::<u64, (u64, u64)>::new());
    let mut progress = |p| {
        let name = files_ui::shown(&current.borrow());
        match &p {
            Progress::Resumed { bytes, total } => bars.say(&format!(
                "{name}: resuming at {} of {} (kept from an interrupted download)",
                human_size(*bytes),
                human_size(*total)
            )),
            Progress::StartedOver { bytes } => bars.say(&format!(
                "{name}: the {} kept from an interrupted download are not the file on \
                 the server (it changed since); starting over",
                human_size(*bytes)
            )),
            Progress::File { file, bytes, total } => {
                let mut moved = moved.borrow_mut();
                moved.insert(*file, (*bytes, *total));
                let (bytes, total) = (moved.values()).fold((0, 0), |(b, t), (x, y)| (b + x, t + y));
                return bars.show(Progress::Transfer { bytes, total });
            }
            _ => {}
        }
        bars.show(p)
    };
    // The partial files of the request running, locked (`local::lock_part`)
    // until the next one starts: two `ferry get` into one destination at
    // once would write one file.
    use ferry_runtime_smol::files::{local, part_path};
    let mut locked: Vec<std::fs::File> = Vec::new();
    let mut lock = move |dests: &[&Download]| -> Result<(), String> {
        // Let go first: a request tried again locks the same files anew.
        locked.clear();
        if to_stdout {
            return Ok(());
        }
        for d in dests {
            locked.push(local::lock_part(&part_path(&d.dest))?);
        }
        Ok(())
    };
    let mut plan = Plan::new(&args.client);
    plan.keep_going = true;
    // Standard output has no time or mode to give, and its private copy
    // must stay readable to be copied out.
    plan.cfg.preserve = !args.no_preserve && !to_stdout;
    // Every destination was free when the command began (or --force): one
    // there now is this command's own, from a try whose session was lost
    // after it landed, which the second try may replace.
    let force = args.force;
    let replace = |d: &Download| force || d.dest.symlink_metadata().is_ok();
    plan.files = Some(Box::new(|request: &Request| match request {
        Request::Download { name, .. } => {
            let d = by_name.get(name.as_str())?;
            bars.start(0, name);
            current.replace(name.clone());
            if let Err(e) = lock(&[d]) {
                return Some(Err(e));
            }
            Some(Ok(match to_stdout {
                // A private copy, gone with the command: not resumed.
                true => Files::destination_unnamed(&d.dest, force),
                false => Files::destination(&d.dest, replace(d)),
            }))
        }
        Request::DownloadMany { files } => {
            let batch: Vec<&Download> = (files.iter())
                .filter_map(|(_, name)| by_name.get(name.as_str()).copied())
                .collect();
            if let Err(e) = lock(&batch) {
                return Some(Err(e));
            }
            let dests: Vec<(PathBuf, bool)> = (batch.iter())
                .map(|d| (d.dest.clone(), replace(d)))
                .collect();
            bars.start(0, &format!("{} files", files.len()));
            moved.borrow_mut().clear();
            Some(Ok(Files::destinations(&dests)))
        }
        _ => None,
    }));
    plan.progress = Some(&mut progress);
    let (requests, covers) = requests(args.owner.as_ref(), downloads, to_stdout);
    let answers = client_session::run_all_as(&args.client, plan, token, requests);
    bars.finish();
    // One answer per file, in order.
    let mut per_file: Vec<Option<Response>> = vec![None; downloads.len()];
    for (answer, covered) in answers?.into_iter().zip(covers) {
        match answer {
            Response::Received(outcomes) if outcomes.len() == covered.len() => {
                for (o, i) in outcomes.into_iter().zip(covered) {
                    per_file[i] = Some(match o {
                        Landed::Stored { size, digest } => Response::Downloaded { size, digest },
                        Landed::Failed(e) => Response::Failed(e),
                    });
                }
            }
            Response::Received(outcomes) => {
                let said = format!(
                    "the server answered {} of a batch of {} files",
                    outcomes.len(),
                    covered.len()
                );
                for i in covered {
                    per_file[i] = Some(Response::Failed(OpError::Unavailable {
                        reason: said.clone(),
                    }));
                }
            }
            // A batch refused whole (or a single file's answer).
            other => {
                for i in covered {
                    per_file[i] = Some(other.clone());
                }
            }
        }
    }
    Ok(per_file)
}

/// The requests that download `downloads`, and which of them each covers:
/// a single `Download` for one file alone, for standard output, and for a
/// file with a partial file kept (it resumes); `DownloadMany` batches of
/// at most [`BATCH_FILES`] files and [`BATCH_NAME_BYTES`] of names for
/// the rest.
fn requests(
    owner: Option<&String>,
    downloads: &[Download],
    to_stdout: bool,
) -> (Vec<Request>, Vec<Vec<usize>>) {
    use ferry_runtime_smol::files::part_path;
    let alone = |d: &Download| {
        to_stdout
            || downloads.len() == 1
            || std::fs::symlink_metadata(part_path(&d.dest)).is_ok_and(|m| m.len() > 0)
    };
    let mut requests = Vec::new();
    let mut covers = Vec::new();
    let mut batch: Vec<usize> = Vec::new();
    let mut name_bytes = 0;
    let flush = |batch: &mut Vec<usize>, requests: &mut Vec<Request>, covers: &mut Vec<_>| {
        if batch.is_empty() {
            return;
        }
        requests.push(Request::DownloadMany {
            files: (batch.iter())
                .map(|&i| (owner.cloned(), downloads[i].name.clone()))
                .collect(),
        });
        covers.push(std::mem::take(batch));
    };
    let owner_bytes = owner.map_or(0, String::len);
    let batch_files = files_per_batch();
    for (i, d) in downloads.iter().enumerate() {
        if alone(d) {
            requests.push(Request::Download {
                owner: owner.cloned(),
                name: d.name.clone(),
            });
            covers.push(vec![i]);
            continue;
        }
        let bytes = owner_bytes + d.name.len();
        if batch.len() == batch_files || name_bytes + bytes > BATCH_NAME_BYTES {
            flush(&mut batch, &mut requests, &mut covers);
            name_bytes = 0;
        }
        batch.push(i);
        name_bytes += bytes;
    }
    flush(&mut batch, &mut requests, &mut covers);
    (requests, covers)
}

/// Says what became of each file (on stderr when the content went to
/// standard output); fails if any was not downloaded.
fn report(
    downloads: &[Download],
    unchanged: &[Download],
    answers: Vec<Option<Response>>,
    to_stdout: bool,
    json: bool,
) -> Result<(), CliError> {
    let mut failed = Vec::new();
    let mut out = crate::json::Get::default();
    for d in unchanged {
        let why = format!("already at {}", d.shown);
        let at = d.dest.display().to_string();
        files_ui::unchanged(&mut out.unchanged, json, &d.name, at, &why);
    }
    let mut answers = answers.into_iter();
    for d in downloads {
        match answers.next().flatten() {
            Some(Response::Downloaded { size, .. }) => {
                if json {
                    out.downloaded.push(crate::json::Downloaded {
                        name: d.name.clone(),
                        size,
                        to: if to_stdout {
                            "-".into()
                        } else {
                            d.dest.display().to_string()
                        },
                    });
                }
                if to_stdout {
                    copy_to_stdout(&d.dest)?;
                    eprintln!(
                        "downloaded {} ({}, {size} bytes) to standard output",
                        files_ui::shown(&d.name),
                        human_size(size)
                    );
                } else if !json {
                    say(format_args!(
                        "downloaded {} ({}, {size} bytes) to {}",
                        files_ui::shown(&d.name),
                        human_size(size),
                        d.shown
                    ));
                }
            }
            // The server checks its copy when told so, and replaces it if
            // it is damaged: asking again is likely to work.
            Some(Response::Failed(e @ OpError::Transfer(TransferError::DigestMismatch))) => {
                let said = format!("{e}; the server now checks its copy, try again shortly");
                failed.push((d, CliError::Failed(said)))
            }
            Some(Response::Failed(e)) => failed.push((d, CliError::op(&e))),
            Some(other) => failed.push((d, unexpected(other))),
            None => failed.push((d, CliError::Failed("not asked for".into()))),
        }
    }
    if json {
        out.failed = failed
            .iter()
            .map(|(d, e)| crate::json::Failed::new(d.name.clone(), e))
            .collect();
        // With the content on standard output, the JSON goes to stderr.
        if to_stdout {
            match serde_json::to_string(&out) {
                Ok(text) => eprintln!("{text}"),
                Err(e) => eprintln!("ferry: cannot write JSON: {e}"),
            }
        } else {
            crate::json::print(&out);
        }
    }
    let failed = failed
        .into_iter()
        .map(|(d, e)| (files_ui::shown(&d.name), e))
        .collect();
    files_ui::outcome(
        downloads.len() + unchanged.len(),
        failed,
        "downloaded",
        json,
    )
}

fn copy_to_stdout(path: &Path) -> Result<(), CliError> {
    use std::io::Write;
    let mut file = std::fs::File::open(path)
        .map_err(|e| CliError::Failed(format!("cannot read the downloaded copy: {e}")))?;
    let mut out = std::io::stdout().lock();
    std::io::copy(&mut file, &mut out)
        .and_then(|_| out.flush())
        .map_err(|e| CliError::Failed(format!("cannot write to standard output: {e}")))?;
    Ok(())
}

/// `--force` replaces only a regular file or a link, and a file only if
/// its owner can be kept: refused here, before anything is downloaded (and
/// looked at again just before the rename).
fn check_replaceable(dest: &Path) -> Result<(), CliError> {
    use ferry_runtime_smol::files::local::{replaceable, Target};
    match replaceable(dest).map_err(CliError::Failed)? {
        Target::Regular { uid, gid, .. } => {
            // SAFETY: geteuid cannot fail and touches no memory.
            let euid = unsafe { libc::geteuid() };
            if euid != 0 && uid != euid {
                return Err(CliError::Failed(format!(
                    "{} belongs to user {uid} (group {gid}), and ferry may not give the new \
                     file that owner; nothing was replaced (remove it first to replace it)",
                    dest.display()
                )));
            }
            Ok(())
        }
        Target::Absent | Target::Link => Ok(()),
    }
}

/// On Ctrl-C or SIGTERM, removes the temporary files `cleanup` (and
/// directories), and the partial files `parts` that hold nothing; the
/// others are kept for the same command to resume. Exits (130).
fn remove_on_interrupt(cleanup: Vec<PathBuf>, parts: Vec<PathBuf>) {
    let installed = ctrlc::set_handler(move || {
        for path in &cleanup {
            let _ = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir(path));
        }
        let mut kept = false;
        for part in &parts {
            match std::fs::symlink_metadata(part) {
                Ok(m) if m.is_file() && m.len() > 0 => kept = true,
                Ok(m) if m.is_file() => {
                    let _ = std::fs::remove_file(part);
                }
                _ => {}
            }
        }
        if kept {
            eprintln!("error: interrupted; run the same command again to resume");
        } else {
            eprintln!("error: interrupted; nothing was kept");
        }
        std::process::exit(crate::error::INTERRUPTED.into());
    });
    if let Err(e) = installed {
        tracing::warn!("cannot catch Ctrl-C: {e}");
    }
}

/// How many files a batch of downloads takes: [`BATCH_FILES`], or fewer
/// where the process may open fewer descriptors than a batch holds (one
/// locked partial file each, up to [`MAX_OPEN`] being written, and the
/// session's own).
fn files_per_batch() -> usize {
    use ferry_runtime_smol::files::MAX_OPEN;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, nothing else.
    let soft = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
        0 => usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX),
        _ => return BATCH_FILES,
    };
    soft.saturating_sub(MAX_OPEN + 64).clamp(1, BATCH_FILES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_names_become_paths_under_the_folder_or_are_refused() {
        let root = Path::new("/dest/photos");
        assert_eq!(
            local_path(root, "photos", "photos/2024/a b.jpg").unwrap(),
            Path::new("/dest/photos/2024/a b.jpg")
        );
        assert_eq!(
            local_path(root, "me/photos", "me/photos/-x").unwrap(),
            Path::new("/dest/photos/-x")
        );
        // What a malicious server might list: each refused, none a path.
        for evil in [
            "photos/../../etc/passwd",
            "photos/..",
            "photos/./x",
            "/etc/passwd",
            "photos//x",
            "photos/",
            "photos",
            "other/x",
            "photosx/y",
            "../photos/x",
            "photos/a\\..\\..\\b",
            "photos/\u{1b}]0;x",
            "photos/a\0b",
        ] {
            let got = local_path(root, "photos", evil);
            assert!(got.is_err(), "{evil:?} gave {got:?}");
        }
    }
}
