//! What the file commands share: the saved login, the progress bar, and how
//! sizes and times are shown.

use crate::client_session::Progress;
use crate::error::CliError;
use crate::session_file;
use ferry_core::accounts::token::SessionToken;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// The saved login's token (the error says to log in if there is none).
pub fn token() -> Result<SessionToken, CliError> {
    let path = session_file::path()?;
    Ok(session_file::load_required(&path)?.token)
}

/// A file name as given on the command line, as it is sent: in Unicode NFC
/// (so `café` is one name however it was typed), and checked the way the
/// servers check it (a path of checked components: `photos/2024/a.jpg`),
/// so a bad one fails before anything is sent.
pub fn name(raw: &str) -> Result<String, CliError> {
    let name = ferry_core::names::normalize(raw);
    ferry_core::server::check_path(&name).map_err(|reason| {
        CliError::Failed(format!("bad file name \"{}\": {reason}", shown(&name)))
    })?;
    Ok(name)
}

/// A name that may be a folder's, as given on the command line: like
/// [`name`], but a trailing `/` (what a shell's completion adds to a
/// directory) is dropped.
pub fn folder(raw: &str) -> Result<String, CliError> {
    let trimmed = raw.trim_end_matches('/');
    name(if trimmed.is_empty() { raw } else { trimmed })
}

/// Tells of a file left as it was (`get -r`, `put` run again): in the
/// JSON document's `unchanged`, or as a line saying `why`.
pub fn unchanged(
    out: &mut Vec<crate::json::Unchanged>,
    json: bool,
    name: &str,
    at: String,
    why: &str,
) {
    match json {
        true => out.push(crate::json::Unchanged {
            name: name.to_string(),
            at,
        }),
        false => crate::say(format_args!("unchanged {} ({why})", shown(name))),
    }
}

/// The end of a command of `total` files, some of which failed (each named
/// by `who`, with its error): one file's error is the command's; several
/// are listed on stderr, and the command fails with their common kind of
/// refusal, if they share one.
pub fn outcome(
    total: usize,
    failed: Vec<(String, CliError)>,
    verb: &str,
    quiet: bool,
) -> Result<(), CliError> {
    if failed.is_empty() {
        return Ok(());
    }
    if total == 1 {
        if let Some((_, e)) = failed.into_iter().next() {
            return Err(e);
        }
        return Ok(());
    }
    let kinds: Vec<_> = failed
        .iter()
        .map(|(_, e)| match e {
            CliError::Refused { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect();
    if !quiet {
        for (who, e) in &failed {
            eprintln!("ferry: {who}: {e}");
        }
    }
    Err(CliError::of_many(
        &kinds,
        format!("{} of {total} files were not {verb}", failed.len()),
    ))
}

/// A name fit for the terminal: control and invisible characters escaped
/// (`ferry_core::names::shown`). Every name a command prints goes through
/// it: names stored before they were checked, or shared by others, may
/// hold anything.
pub fn shown(name: &str) -> String {
    ferry_core::names::shown(name)
}

/// The progress bar of the file a command of many files is moving: one
/// bar per file, the last finished when the next starts.
#[derive(Default)]
pub struct Bars(std::cell::RefCell<Option<Bar>>);

impl Bars {
    /// The file `name`, of `total` bytes (0 if not known yet), starts.
    pub fn start(&self, total: u64, name: &str) {
        if let Some(done) = self.0.borrow_mut().replace(Bar::new(total, &shown(name))) {
            done.finish();
        }
    }

    pub fn show(&self, progress: Progress) {
        if let Some(bar) = self.0.borrow_mut().as_mut() {
            bar.show(progress)
        }
    }

    pub fn finish(&self) {
        if let Some(done) = self.0.borrow_mut().take() {
            done.finish();
        }
    }

    /// Says `line` on stderr, above the bar if one is drawn.
    pub fn say(&self, line: &str) {
        match self.0.borrow().as_ref() {
            Some(bar) if !bar.bar.is_hidden() => bar.bar.suspend(|| eprintln!("ferry: {line}")),
            _ => eprintln!("ferry: {line}"),
        }
    }
}

/// A transfer's progress bar on stderr, drawn only when stderr is a
/// terminal (hidden otherwise, so logs and pipes stay clean).
pub struct Bar {
    bar: ProgressBar,
    label: String,
    /// What the bar says the server is doing, if it is not transferring.
    working: Option<&'static str>,
}

impl Bar {
    pub fn new(total: u64, label: &str) -> Bar {
        let bar = if std::io::stderr().is_terminal() {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(label.to_string());
        Bar {
            bar,
            label: label.to_string(),
            working: None,
        }
    }

    pub fn show(&mut self, progress: Progress) {
        // Called for every ACK: a stop-and-wait transfer makes one per
        // 4 KiB, and an unseen bar's estimate is not worth its arithmetic.
        if self.bar.is_hidden() {
            return;
        }
        let (bytes, total, working) = match progress {
            Progress::Transfer { bytes, total }
            | Progress::File { bytes, total, .. }
            | Progress::Resumed { bytes, total } => (bytes, total, None),
            Progress::ServerFetching { bytes, total } => {
                (bytes, total, Some("the server is fetching it"))
            }
            Progress::ServerCopying { bytes, total } => {
                (bytes, total, Some("the server is copying it to the others"))
            }
            Progress::StartedOver { .. } => (0, self.bar.length().unwrap_or(0), None),
            Progress::Session { .. } => return,
        };
        if working != self.working {
            self.working = working;
            self.bar.reset();
            self.bar.set_message(match working {
                Some(what) => format!("{} ({what})", self.label),
                None => self.label.clone(),
            });
        }
        self.bar.set_length(total);
        self.bar.set_position(bytes);
    }

    /// Removes the bar (the command prints its own last line).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A size for people: bytes below 1 KiB, else one decimal of the largest
/// binary unit.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Unix seconds as `YYYY-MM-DD HH:MM` in UTC.
pub fn utc_minutes(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(4096), "4.0 KiB");
        assert_eq!(human_size(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
        assert_eq!(human_size(1 << 30), "1.0 GiB");
        assert_eq!(human_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn times_are_utc_minutes() {
        assert_eq!(utc_minutes(0), "1970-01-01 00:00");
        // 2026-11-23 08:15:59 UTC.
        assert_eq!(utc_minutes(1_795_421_759), "2026-11-23 08:15");
        // A leap day.
        assert_eq!(utc_minutes(951_782_400), "2000-02-29 00:00");
    }
}
