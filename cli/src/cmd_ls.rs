//! `ferry ls [FOLDER]`: my files and the files shared with me, or only
//! those under a folder.

use crate::client_session::{self, unexpected, Plan};
use crate::error::CliError;
use crate::files_ui::{self, human_size, shown, utc_minutes};
use crate::{say, ClientArgs};
use ferry_core::server::messages::Listed;
use ferry_core::server::{Request, Response};
use unicode_width::UnicodeWidthStr;

#[derive(clap::Args)]
pub struct Args {
    /// Only the files under this folder (at any depth), yours or shared
    /// with you.
    #[arg(value_name = "FOLDER")]
    folder: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let request = match &args.folder {
        Some(f) => Request::ListUnder {
            prefix: files_ui::folder(f)?,
        },
        None => Request::List,
    };
    let token = files_ui::token()?;
    let plan = Plan::new(&args.client);
    match client_session::run_as(&args.client, plan, token, request)? {
        Response::Listing(files) if args.client.json => {
            let files = files.iter().map(crate::json::File::from).collect();
            crate::json::print(&crate::json::Listing { files });
            Ok(())
        }
        Response::Listing(files) => {
            for line in table(&files) {
                say(format_args!("{line}"));
            }
            Ok(())
        }
        Response::Failed(e) => Err(CliError::op(&e)),
        other => Err(unexpected(other)),
    }
}

/// The listing as aligned lines, a header first: name, owner, size, time
/// of upload (UTC), and for one's own files who they are shared with.
/// Columns are aligned by display width: a CJK character or an emoji takes
/// two terminal columns, a combining accent none. Names are shown with
/// control and invisible characters escaped: none can be stored now, but
/// names stored before they were refused may hold them.
pub fn table(files: &[Listed]) -> Vec<String> {
    if files.is_empty() {
        return vec!["no files".to_string()];
    }
    let header = ["NAME", "OWNER", "SIZE", "UPLOADED (UTC)", "SHARED WITH"].map(String::from);
    let mut rows = vec![header];
    for f in files {
        rows.push([
            shown(&f.name),
            shown(&f.owner),
            human_size(f.size),
            utc_minutes(f.at),
            f.shared_with
                .iter()
                .map(|u| shown(u))
                .collect::<Vec<_>>()
                .join(","),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.width());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let pad = widths[i] - cell.width();
                if i == 2 {
                    // Sizes align right.
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if i + 1 < row.len() {
                        line.push_str(&" ".repeat(pad));
                    }
                }
                if i + 1 < row.len() {
                    line.push_str("  ");
                }
            }
            line.trim_end().to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_is_an_aligned_table() {
        let files = [
            Listed {
                owner: "alice".into(),
                name: "report.pdf".into(),
                size: 3 * 1024 * 1024 + 512 * 1024,
                at: 1_795_421_759,
                shared_with: vec!["bob".into(), "carol".into()],
                attrs: None,
            },
            Listed {
                owner: "dave".into(),
                name: "x".into(),
                size: 0,
                at: 0,
                shared_with: vec![],
                attrs: None,
            },
        ];
        assert_eq!(
            table(&files),
            [
                "NAME        OWNER     SIZE  UPLOADED (UTC)    SHARED WITH",
                "report.pdf  alice  3.5 MiB  2026-11-23 08:15  bob,carol",
                "x           dave       0 B  1970-01-01 00:00",
            ]
        );
        assert_eq!(table(&[]), ["no files"]);
    }

    #[test]
    fn hidden_characters_are_shown_escaped() {
        let file = |name: &str| Listed {
            owner: "al".into(),
            name: name.into(),
            size: 1,
            at: 0,
            shared_with: vec![],
            attrs: None,
        };
        // Stored before such names were refused: they show what hides in
        // them, and cannot take the terminal over.
        let lines = table(&[file("pay\u{200B}pal"), file("\u{1b}]0;owned\u{7}")]);
        assert_eq!(
            lines,
            [
                "NAME                 OWNER  SIZE  UPLOADED (UTC)    SHARED WITH",
                "pay\\u{200b}pal       al      1 B  1970-01-01 00:00",
                "\\u{1b}]0;owned\\u{7}  al      1 B  1970-01-01 00:00",
            ]
        );
    }

    #[test]
    fn wide_characters_keep_the_columns_aligned() {
        let file = |name: &str| Listed {
            owner: "al".into(),
            name: name.into(),
            size: 1,
            at: 0,
            shared_with: vec![],
            attrs: None,
        };
        let lines = table(&[
            file("写真🚀"),
            file("e\u{301}t\u{301}e\u{301}"),
            file("plain"),
        ]);
        assert_eq!(
            lines,
            [
                "NAME    OWNER  SIZE  UPLOADED (UTC)    SHARED WITH",
                "写真🚀  al      1 B  1970-01-01 00:00",
                "e\u{301}t\u{301}e\u{301}     al      1 B  1970-01-01 00:00",
                "plain   al      1 B  1970-01-01 00:00",
            ]
        );
    }
}
