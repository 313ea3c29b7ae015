//! The client's disk: what a download may replace and how, its temporary
//! file, the partial files a killed download left, and the copy an upload
//! takes of a file whose size is not known in advance. See *The client's
//! disk* in the module docs of [`super`] and docs/security.md.

use std::ffi::CString;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What a name holds, in the words of an error.
pub fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// What a download with `--force` finds at its destination.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// Nothing: the file is new.
    Absent,
    /// A symbolic link: replaced by the file itself (never followed).
    Link,
    /// A regular file, whose mode and owner the new file takes.
    Regular { mode: u32, uid: u32, gid: u32 },
}

/// Looks at `path` without following a link (`lstat`): a download may
/// replace only a regular file or a link. Anything else (a directory, a
/// FIFO, a socket, a device) is refused with an error that says what it
/// is.
pub fn replaceable(path: &Path) -> Result<Target, String> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Target::Absent),
        Err(e) => Err(format!("cannot look at {}: {e}", path.display())),
        Ok(m) if m.file_type().is_symlink() => Ok(Target::Link),
        Ok(m) if m.is_file() => Ok(Target::Regular {
            mode: m.mode() & 0o777,
            uid: m.uid(),
            gid: m.gid(),
        }),
        Ok(m) => Err(format!(
            "{} is {}; --force replaces only a regular file or a symbolic link",
            path.display(),
            kind(&m)
        )),
    }
}

/// Gives the new file `file` the owner and mode of the one it replaces
/// (`fchown`, then `fchmod`: a change of owner may clear mode bits). The
/// set-user-ID and set-group-ID bits are not carried over: they belong to
/// the old content, not to what was downloaded. A process that may not
/// give the file that owner (not root, and the file is another user's, or
/// in a group it is not in) fails: the file is not replaced rather than
/// change hands silently.
pub fn keep_owner_and_mode(file: &File, path: &Path, target: &Target) -> Result<(), String> {
    let Target::Regular { mode, uid, gid } = *target else {
        return Ok(());
    };
    let fd = file.as_raw_fd();
    // SAFETY: a descriptor open for as long as `file` is borrowed.
    if unsafe { libc::fchown(fd, uid, gid) } != 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) => format!(
                "{} belongs to user {uid} (group {gid}), and ferry may not give the new \
                 file that owner; nothing was replaced (remove it first to replace it)",
                path.display()
            ),
            _ => format!("cannot keep the owner of {}: {e}", path.display()),
        });
    }
    // SAFETY: as above.
    if unsafe { libc::fchmod(fd, mode as libc::mode_t) } != 0 {
        let e = io::Error::last_os_error();
        return Err(format!("cannot keep the mode of {}: {e}", path.display()));
    }
    Ok(())
}

/// An unnamed file in `dir` (`O_TMPFILE`): nothing in the directory shows
/// it, and it goes with its last descriptor, even on `kill -9`. `None`
/// where the filesystem or the kernel cannot make one (`EOPNOTSUPP`,
/// `EISDIR`, `EINVAL`, `ENOSYS`), or where it could not be linked in once
/// complete (no `/proc/self/fd`): the caller then uses a named file.
#[cfg(target_os = "linux")]
pub fn open_unnamed(dir: &Path) -> io::Result<Option<File>> {
    if !Path::new("/proc/self/fd").is_dir() {
        return Ok(None);
    }
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o666)
        .open(dir)
    {
        Ok(f) => Ok(Some(f)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOSYS)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
pub fn open_unnamed(_dir: &Path) -> io::Result<Option<File>> {
    Ok(None)
}

/// Gives the unnamed file `file` the name `to` (`linkat` of
/// `/proc/self/fd/N` with `AT_SYMLINK_FOLLOW`, which needs no privilege,
/// unlike `AT_EMPTY_PATH`). Never replaces: fails with `AlreadyExists` if
/// `to` is taken, however it came to be.
#[cfg(target_os = "linux")]
pub fn link_unnamed(file: &File, to: &Path) -> io::Result<()> {
    let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(|_| io::Error::from(ErrorKind::InvalidInput))?;
    let to = c_path(to)?;
    // SAFETY: two valid NUL-terminated paths, only read during the call.
    let linked = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    match linked {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(not(target_os = "linux"))]
pub fn link_unnamed(_file: &File, _to: &Path) -> io::Result<()> {
    Err(io::Error::from(ErrorKind::Unsupported))
}

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(ErrorKind::InvalidInput))
}

/// Opens the partial file of a resumable download (`.NAME.ferry-part`),
/// creating it if missing (mode 0600: it may hold private content), and
/// locks it (`flock`) for as long as the returned descriptor is open: two
/// `ferry get` into the same destination at once would write one file.
/// Never through a link, and only a regular file. The lock goes with the
/// process however it ends.
pub fn lock_part(path: &Path) -> Result<File, String> {
    match open_part(path, true)? {
        Some(file) => Ok(file),
        None => Err(format!("cannot open {}: it went", path.display())),
    }
}

/// Whether the partial file at `path` may be locked now, without making
/// one where there is none: a command checks every destination before
/// anything moves, and locks each only when its turn comes.
pub fn check_part(path: &Path) -> Result<(), String> {
    open_part(path, false).map(drop)
}

/// [`lock_part`], or with `create` false `None` where there is no file.
fn open_part(path: &Path, create: bool) -> Result<Option<File>, String> {
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if !create && e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(match e.raw_os_error() {
                Some(libc::ELOOP) => format!("{} is a symbolic link; remove it", path.display()),
                _ => format!("cannot open {}: {e}", path.display()),
            })
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot look at {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is {}; remove it", path.display(), kind(&meta)));
    }
    // SAFETY: a descriptor open for as long as `file` is borrowed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => format!(
                "another ferry get is writing {} (its partial file is locked)",
                path.display()
            ),
            _ => format!("cannot lock {}: {e}", path.display()),
        });
    }
    Ok(Some(file))
}

/// Takes up the partial file at `path`, if it is a regular file: cuts it
/// back to a whole number of `block`s (a download resumes at a block
/// boundary, and bytes past it would outlive the resumed download) and
/// returns how many bytes it holds then. `None` if there is none. (A
/// `block` of `u64::MAX` empties it.)
pub fn take_up_part(path: &Path, block: u64) -> io::Result<Option<u64>> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
        Ok(m) if !m.is_file() => return Ok(None),
        Ok(_) => {}
    }
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    let kept = meta.len() / block.max(1) * block.max(1);
    if kept != meta.len() {
        file.set_len(kept)?;
    }
    Ok(Some(kept))
}

/// The mode a new file of this process gets: 0666 without the umask's
/// bits (read from `/proc/self/status`, which asking the umask does not
/// change; 022 where it cannot be read). A resumable download's partial
/// file is private (0600) while it is partial, and takes this mode when
/// it becomes DEST, as a file created by `ferry get` always had.
pub fn new_file_mode() -> u32 {
    let umask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Umask:"))?;
            u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).ok()
        })
        .unwrap_or(0o022);
    0o666 & !umask
}

/// Gives the new file `file` the mode of a new file ([`new_file_mode`]).
pub fn set_new_file_mode(file: &File, path: &Path) -> Result<(), String> {
    let mode = new_file_mode();
    // SAFETY: a descriptor open for as long as `file` is borrowed.
    if unsafe { libc::fchmod(file.as_raw_fd(), mode as libc::mode_t) } != 0 {
        let e = io::Error::last_os_error();
        return Err(format!("cannot set the mode of {}: {e}", path.display()));
    }
    Ok(())
}

/// The process `pid` is gone (`kill(pid, 0)` answers `ESRCH`). A process
/// that exists but is not ours (`EPERM`) is alive.
fn is_gone(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only asks whether pid exists.
    let r = unsafe { libc::kill(pid, 0) };
    r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// The process id in a partial file's name, `.NAME.ferry-partial-PID`.
pub fn partial_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix('.')?;
    let (_, pid) = rest.rsplit_once(".ferry-partial-")?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes from `dir` the partial downloads (`.NAME.ferry-partial-PID`,
/// regular files only, never a link or what it points to) whose process
/// is gone: what a `get` killed with -9 left where it had to use a named
/// temporary file. Returns the paths removed. Processes are looked up on
/// this machine only: see docs/security.md for a directory shared with
/// another.
pub fn remove_stale_partials(dir: &Path) -> Vec<PathBuf> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(partial_pid) else {
            continue;
        };
        // `DirEntry::file_type` does not follow a link.
        if !entry.file_type().is_ok_and(|t| t.is_file()) || !is_gone(pid) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!("removed {} (left by process {pid})", path.display());
                removed.push(path);
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
        }
    }
    removed
}

/// Filesystems whose files report a size that is not their content's
/// (procfs says 0, sysfs 4096): read to their end, never trusted.
#[cfg(target_os = "linux")]
pub fn size_is_unreliable(file: &File) -> bool {
    const PSEUDO: &[i64] = &[
        0x9fa0,      // proc
        0x6265_6572, // sysfs
        0x6462_6720, // debugfs
        0x7472_6163, // tracefs
        0x7363_6673, // securityfs
        0x6265_6570, // configfs
        0x0027_e0eb, // cgroup
        0x6367_7270, // cgroup2
        0xde5e_81e4, // efivarfs
        0xf97c_ff8c, // selinuxfs
    ];
    // SAFETY: statfs is plain data; fstatfs fills it for an open descriptor.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a descriptor open for as long as `file` is borrowed, and a
    // buffer of the right type.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut s) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)]
    let magic = s.f_type as i64;
    PSEUDO.contains(&magic)
}

#[cfg(not(target_os = "linux"))]
pub fn size_is_unreliable(_file: &File) -> bool {
    false
}

/// Can the upload read `file` in place, with the size `fstat` gives? Only
/// a regular file of a real filesystem with a size above 0 (a `/proc`
/// file says 0 whatever it holds). Anything else is read to its end first
/// ([`spool`]).
pub fn size_known(file: &File) -> io::Result<Option<u64>> {
    let meta = file.metadata()?;
    if meta.is_file() && meta.len() > 0 && !size_is_unreliable(file) {
        return Ok(Some(meta.len()));
    }
    Ok(None)
}

/// Room a spool leaves on its filesystem at least: it stops rather than
/// fill the disk (`ferry put /dev/zero` never ends by itself).
pub const SPOOL_SPARE_MIN: u64 = 64 << 20;

/// How often (in bytes copied) the spool looks at the room left.
const SPOOL_CHECK_EVERY: u64 = 8 << 20;

/// Copies `src` to its end into a private unnamed file in `dir` (the
/// system's temporary directory, for `put`) and returns it with its size:
/// an upload of something whose size is not known in advance (a pipe, a
/// `/proc` file, a file that changed while it was sent) sends this copy,
/// exactly what was read. Unnamed (`O_TMPFILE`) where the filesystem
/// allows, else a named file (mode 0600, `O_EXCL`) unlinked at once: in
/// both cases nothing is left after the process, however it ends. Stops
/// with an error rather than leave less than 5% of the filesystem (and at
/// least [`SPOOL_SPARE_MIN`]) free.
pub fn spool(src: &mut impl Read, dir: &Path) -> io::Result<(File, u64)> {
    let mut file = match open_unnamed(dir)? {
        Some(f) => f,
        None => named_then_unlinked(dir)?,
    };
    // Private whatever the umask: it may hold anything.
    // SAFETY: a descriptor open for as long as `file` is borrowed.
    unsafe { libc::fchmod(file.as_raw_fd(), 0o600) };
    let mut buf = vec![0u8; 256 << 10];
    let mut size = 0u64;
    let mut next_check = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if size >= next_check {
            check_room(&file, dir)?;
            next_check = size + SPOOL_CHECK_EVERY;
        }
        file.write_all(&buf[..n])?;
        size += n as u64;
    }
    Ok((file, size))
}

/// Fails if the spool's filesystem is nearly full.
fn check_room(file: &File, dir: &Path) -> io::Result<()> {
    // SAFETY: statvfs is plain data; fstatvfs fills it.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: an open descriptor and a buffer of the right type.
    if unsafe { libc::fstatvfs(file.as_raw_fd(), &mut s) } != 0 {
        return Ok(());
    }
    let (size, free) = size_and_free(&s);
    let spare = (size / 20).max(SPOOL_SPARE_MIN);
    if free < spare {
        return Err(io::Error::new(
            ErrorKind::StorageFull,
            format!(
                "{} is nearly full: the copy stopped with {free} bytes left free",
                dir.display(),
            ),
        ));
    }
    Ok(())
}

/// A filesystem's size and the bytes free to an unprivileged writer.
fn size_and_free(s: &libc::statvfs) -> (u64, u64) {
    #[allow(clippy::unnecessary_cast)]
    let (frsize, blocks, avail) = (s.f_frsize as u64, s.f_blocks as u64, s.f_bavail as u64);
    (blocks.saturating_mul(frsize), avail.saturating_mul(frsize))
}

/// Bytes free to an unprivileged writer on the filesystem holding `dir`;
/// `None` if the system will not say.
pub fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; statvfs fills it.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a buffer of the right type.
    if unsafe { libc::statvfs(path.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some(size_and_free(&s).1)
}

/// A new file in `dir`, mode 0600, removed from the directory at once.
fn named_then_unlinked(dir: &Path) -> io::Result<File> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
    let path = dir.join(format!(
        ".ferry-spool-{}-{:016x}",
        std::process::id(),
        u64::from_le_bytes(random)
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}
