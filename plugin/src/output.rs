//! Output formats, plain-text tables, and standard output that a closed
//! pipe ends quietly.

use clap::ValueEnum;

/// The exit status of a command whose reader went away (`| head`): what a
/// shell reports for a program SIGPIPE ended (128 + 13).
pub const CLOSED_PIPE_EXIT: i32 = 141;

/// Writes to standard output, flushed. A reader that went away (`cmd |
/// head`) ends the program at once, quietly, with [`CLOSED_PIPE_EXIT`], as
/// a Unix tool ends; another write error (a full disk) ends it with 1 and
/// says so. Commands print through [`out!`] and [`outln!`], never
/// `println!`, which panics on a closed pipe.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        exit_on_write_error(&e);
    }
}

/// Writes bytes to standard output, as [`write_stdout`].
pub fn write_stdout_bytes(bytes: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        exit_on_write_error(&e);
    }
}

fn exit_on_write_error(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(CLOSED_PIPE_EXIT);
    }
    eprintln!("error: cannot write to standard output: {e}");
    std::process::exit(1);
}

/// `print!` for commands: see [`write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` for commands: see [`write_stdout`].
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum TextOrJson {
    #[default]
    Text,
    Json,
}

/// Widest a table cell is shown; longer cells are cut with `…` (JSON output
/// carries them whole).
pub const MAX_CELL: usize = 160;

/// A value as a terminal may safely show it: control characters (escape
/// sequences, line breaks, U+2028) are written as escapes, so that a value
/// read from a file or a server can neither split a line nor drive the
/// terminal.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}');
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A cell as shown: printable, and at most `max` characters.
fn cell(s: &str, max: usize) -> String {
    let p = printable(s);
    if p.chars().count() <= max {
        return p.into_owned();
    }
    let mut cut: String = p.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Renders rows as columns separated by two spaces, like kubectl. Cells are
/// made printable and cut at [`MAX_CELL`] characters.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    table_cut(header, rows, MAX_CELL)
}

/// [`table`] for `-o wide`: cells are made printable, never cut.
pub fn wide_table(header: &[&str], rows: &[Vec<String>]) -> String {
    table_cut(header, rows, usize::MAX)
}

fn table_cut(header: &[&str], rows: &[Vec<String>], max: usize) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cell(c, max)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, cell) in cells.enumerate() {
            s.push_str(cell);
            if i + 1 < widths.len() {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Unified diffs (`--- a/path`, `+++ b/path`) of changed files.
pub fn unified_diffs(files: &[automation::local::FileChanges]) -> String {
    let mut out = String::new();
    for f in files {
        // As git writes it: an absolute path loses its leading slash.
        let path = f.path.display().to_string();
        let name = path.trim_start_matches('/');
        let diff = similar::TextDiff::from_lines(&f.before, &f.after);
        out.push_str(
            &diff
                .unified_diff()
                .context_radius(3)
                .header(&format!("a/{name}"), &format!("b/{name}"))
                .to_string(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_cells_are_cut_not_a_panic() {
        let wide = "x".repeat(70_000);
        let t = table(&["A", "B"], &[vec![wide.clone(), "b".into()]]);
        let first = t.lines().nth(1).unwrap();
        assert!(first.starts_with(&"x".repeat(MAX_CELL - 1)));
        assert!(first.contains("…  b"), "{first}");
        assert!(t.len() < 1000);
    }

    #[test]
    fn wide_tables_cut_nothing() {
        let long = "m".repeat(MAX_CELL * 2);
        let t = wide_table(&["A", "MESSAGE"], &[vec!["a".into(), long.clone()]]);
        assert!(t.lines().nth(1).unwrap().ends_with(&long), "{t}");
    }

    #[test]
    fn control_characters_are_escaped() {
        let t = table(&["TAG"], &[vec!["a\nb\x1b[31mc\u{2028}d".into()]]);
        assert_eq!(t, "TAG\na\\nb\\u{1b}[31mc\\u{2028}d\n");
        assert_eq!(printable("plain"), "plain");
    }
}
