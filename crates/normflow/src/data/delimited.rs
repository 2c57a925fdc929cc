//! Delimited text: CSV, semicolon-separated, TSV, and whitespace-separated (`numpy.savetxt`).
//!
//! The separator is read off the first line that is neither blank nor a comment: a tab if it
//! has one (outside double quotes), else a semicolon, else a comma, else runs of spaces if it
//! holds several words, else a comma (one column). `.tsv` files are always tab-separated. The
//! first row is a header if any of its non-empty cells is not a number; otherwise the columns
//! are named `x0, x1, ...`. Cells are trimmed; blank lines, rows of empty cells (which
//! spreadsheets leave behind) and lines starting with `#` are skipped. Every other cell must
//! parse as a number (`1.5`, `-2e-3`, `nan`, `inf`, ...).

use std::path::Path;

use super::load::LoadOptions;
use super::table::{default_names, file_error, Table};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Separator {
    Byte(u8),
    Whitespace,
}

/// Parses a whole (already decompressed) text file.
pub(super) fn parse(
    path: &Path,
    bytes: &[u8],
    force_tab: bool,
    opts: &LoadOptions,
) -> Result<Table> {
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return Err(file_error(path, "is UTF-16 text; save it as UTF-8 (or plain ASCII) CSV"));
    }
    // Text never holds NUL bytes; parsing a binary file as CSV would only report nonsense cells.
    if bytes.iter().take(1 << 16).any(|&b| b == 0) {
        return Err(file_error(path, "holds binary data (NUL bytes), not CSV text"));
    }
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let Some(first) = lines(text).find(|l| is_content(l)) else {
        return Err(file_error(
            path,
            "no data: the file is empty (or holds only blank and # lines)",
        ));
    };
    let separator = if force_tab { Separator::Byte(b'\t') } else { sniff(first) };
    let mut sink = Sink::new(path, opts, separator);
    match separator {
        Separator::Byte(delimiter) => {
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(delimiter)
                .has_headers(false)
                .flexible(true)
                .trim(csv::Trim::All)
                .comment(Some(b'#'))
                .from_reader(text);
            let mut record = csv::ByteRecord::new();
            // csv's own line counter skips blank and comment lines, so lines are counted here
            // from byte offsets, incrementally to stay linear in the file size.
            let (mut counted_to, mut line) = (0usize, 1u64);
            loop {
                match reader.read_byte_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => {
                        let at = record.position().map_or(counted_to, |p| p.byte() as usize);
                        let start = skip_ignored_lines(text, at.clamp(counted_to, text.len()));
                        line +=
                            text[counted_to..start].iter().filter(|&&b| b == b'\n').count() as u64;
                        counted_to = start;
                        let fields: Vec<&[u8]> = record.iter().collect();
                        sink.push(line, &fields)?;
                    }
                    Err(e) => return Err(file_error(path, format!("malformed CSV: {e}"))),
                }
            }
        }
        Separator::Whitespace => {
            for (i, line) in lines(text).enumerate() {
                if line.starts_with(b"#") {
                    continue;
                }
                let fields: Vec<&[u8]> =
                    line.split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty()).collect();
                sink.push(i as u64 + 1, &fields)?;
            }
        }
    }
    sink.finish()
}

/// The offset of the first byte at or after `at` that is not in an empty or `#` line.
///
/// csv reports where it *started reading* a record, before the empty and comment lines that it
/// skips on the way; the line to report is that of the record's first field.
fn skip_ignored_lines(text: &[u8], mut at: usize) -> usize {
    loop {
        let rest = &text[at..];
        let skip = if rest.starts_with(b"\n") {
            1
        } else if rest.starts_with(b"\r\n") {
            2
        } else if rest.starts_with(b"#") {
            rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1)
        } else {
            return at;
        };
        at += skip;
    }
}

/// The lines of `text`, without their `\n` or `\r\n`.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

fn is_content(line: &[u8]) -> bool {
    !line.starts_with(b"#") && !line.iter().all(u8::is_ascii_whitespace)
}

/// The separator that `line`, the first content line, uses (see the module docs).
fn sniff(line: &[u8]) -> Separator {
    let (mut tabs, mut semicolons, mut commas, mut quoted) = (0, 0, 0, false);
    for &b in line {
        match b {
            b'"' => quoted = !quoted,
            b'\t' if !quoted => tabs += 1,
            b';' if !quoted => semicolons += 1,
            b',' if !quoted => commas += 1,
            _ => {}
        }
    }
    if tabs > 0 {
        Separator::Byte(b'\t')
    } else if semicolons > 0 {
        Separator::Byte(b';')
    } else if commas > 0 {
        Separator::Byte(b',')
    } else if line.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()).count() > 1 {
        Separator::Whitespace
    } else {
        Separator::Byte(b',')
    }
}

fn parse_number(cell: &[u8]) -> Option<f64> {
    std::str::from_utf8(cell).ok()?.parse().ok()
}

/// A cell as text for a message, shortened so one bad cell cannot flood the terminal.
fn shown(cell: &[u8]) -> String {
    let s = String::from_utf8_lossy(cell);
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(40).collect::<String>())
    } else {
        s.into_owned()
    }
}

/// Collects rows, deciding on the header and checking every cell on the way.
struct Sink<'a> {
    path: &'a Path,
    opts: &'a LoadOptions,
    separator: Separator,
    /// Empty until the first row fixes the width.
    columns: Vec<String>,
    /// Where the width came from, for the ragged-row message.
    width_from: String,
    header_line: Option<u64>,
    values: Vec<f64>,
    row: Vec<f64>,
    dropped: usize,
}

impl<'a> Sink<'a> {
    fn new(path: &'a Path, opts: &'a LoadOptions, separator: Separator) -> Self {
        Self {
            path,
            opts,
            separator,
            columns: Vec::new(),
            width_from: String::new(),
            header_line: None,
            values: Vec::new(),
            row: Vec::new(),
            dropped: 0,
        }
    }

    fn push(&mut self, line: u64, fields: &[&[u8]]) -> Result<()> {
        if fields.iter().all(|f| f.is_empty()) {
            return Ok(());
        }
        if self.columns.is_empty() {
            if fields.iter().any(|f| !f.is_empty() && parse_number(f).is_none()) {
                self.columns = fields
                    .iter()
                    .enumerate()
                    .map(|(j, f)| {
                        if f.is_empty() {
                            format!("x{j}")
                        } else {
                            String::from_utf8_lossy(f).into_owned()
                        }
                    })
                    .collect();
                self.width_from = format!("the header (line {line})");
                self.header_line = Some(line);
                return Ok(());
            }
            self.columns = default_names(fields.len());
            self.width_from = format!("the first row (line {line})");
        }
        if fields.len() != self.columns.len() {
            return Err(file_error(
                self.path,
                format!(
                    "line {line} has {} fields but {} has {}; every row needs the same number of \
                     {}-separated fields",
                    fields.len(),
                    self.width_from,
                    self.columns.len(),
                    self.separator_name()
                ),
            ));
        }
        self.row.clear();
        for (j, cell) in fields.iter().enumerate() {
            let v = self.cell(line, j, cell)?;
            self.row.push(v);
        }
        if self.row.iter().all(|v| v.is_finite()) {
            self.values.extend_from_slice(&self.row);
        } else {
            self.dropped += 1;
        }
        Ok(())
    }

    /// The number in column `j` of `line`; non-finite only when those rows are to be dropped.
    fn cell(&self, line: u64, j: usize, cell: &[u8]) -> Result<f64> {
        let at = || format!("line {line}, column {} ({})", j + 1, self.columns[j]);
        if cell.is_empty() {
            return Err(file_error(
                self.path,
                format!(
                    "{}: empty cell; every cell must hold a number (missing values are not \
                     supported: remove or fill the row)",
                    at()
                ),
            ));
        }
        match parse_number(cell) {
            Some(v) if v.is_finite() || self.opts.drop_nonfinite => Ok(v),
            Some(_) => Err(file_error(
                self.path,
                format!(
                    "{}: non-finite value '{}'; remove the row, or load with drop_nonfinite to \
                     skip such rows",
                    at(),
                    shown(cell)
                ),
            )),
            None => Err(file_error(
                self.path,
                format!("{}: cannot parse '{}' as a number{}", at(), shown(cell), self.hint(cell)),
            )),
        }
    }

    /// Why a cell that is not a number might be there, for the error message.
    fn hint(&self, cell: &[u8]) -> &'static str {
        let text = String::from_utf8_lossy(cell).to_lowercase();
        let decimal_comma = text.replace(',', ".").parse::<f64>().is_ok();
        if decimal_comma && self.separator != Separator::Byte(b',') {
            " (decimal commas are not supported: use '.' as the decimal mark)"
        } else if matches!(text.as_str(), "na" | "n/a" | "null" | "none" | "?" | "-" | "missing") {
            " (missing values are not supported: remove or fill the row)"
        } else {
            " (every cell must be numeric: remove text columns such as labels or dates)"
        }
    }

    fn separator_name(&self) -> &'static str {
        match self.separator {
            Separator::Byte(b'\t') => "tab",
            Separator::Byte(b';') => "semicolon",
            Separator::Byte(_) => "comma",
            Separator::Whitespace => "whitespace",
        }
    }

    fn finish(self) -> Result<Table> {
        if self.values.is_empty() {
            let why = if self.dropped > 0 {
                format!(
                    "all {} data rows hold non-finite values, nothing is left after dropping them",
                    self.dropped
                )
            } else if let Some(line) = self.header_line {
                format!("no data rows: the file has a header (line {line}) and nothing after it")
            } else {
                "no data rows".to_string()
            };
            return Err(file_error(self.path, why));
        }
        let cols = self.columns.len();
        Ok(Table {
            rows: self.values.len() / cols,
            cols,
            columns: self.columns,
            values: self.values,
            source: self.path.display().to_string(),
            dropped_rows: self.dropped,
        })
    }
}

/// Writes the row-major matrix `values` (`cols` per row) to `path` as comma-separated text, with
/// the header `columns`.
///
/// Numbers are written in the shortest form that reads back to the same `f64` (exponent
/// notation only for very small or large magnitudes), so [`super::load_table`] round-trips the
/// file exactly.
pub fn write_csv(path: &Path, columns: &[String], values: &[f64], cols: usize) -> Result<()> {
    if cols == 0 || columns.len() != cols || values.len() % cols != 0 {
        return Err(Error::shape(
            format!("write_csv to {}", path.display()),
            format!("{} column names and a multiple of {cols} values, cols > 0", columns.len()),
            &[values.len()],
        ));
    }
    let io = |e: std::io::Error| Error::io(path, e);
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(columns).map_err(|e| io(e.into()))?;
    let mut cells = Vec::with_capacity(cols);
    for row in values.chunks_exact(cols) {
        cells.clear();
        cells.extend(row.iter().map(|&v| format_number(v)));
        writer.write_record(&cells).map_err(|e| io(e.into()))?;
    }
    let bytes = writer.into_inner().map_err(|e| io(e.into_error()))?;
    std::fs::write(path, bytes).map_err(io)
}

/// Shortest round-trip text of `v`; Rust's plain `Display` would spell 1e-300 with 300 zeros.
fn format_number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || !v.is_finite() || (1e-4..1e15).contains(&a) {
        v.to_string()
    } else {
        format!("{v:e}")
    }
}
