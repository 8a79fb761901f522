//! The preview CSV (docs/behaviour.md §4): UTF-8 with a byte-order mark, RFC 4180 (CRLF after every record,
//! fields quoted only when needed), formula injection neutralised. Written as a stream, with
//! its sha256 computed on the way.

use std::borrow::Cow;
use std::io::{self, Write};

use sha2::{Digest, Sha256};

use crate::sync::plan::{Plan, PlanItem};

/// The byte-order mark, so spreadsheet programs read the file as UTF-8 (Japanese names intact).
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The header row.
pub const HEADER: [&str; 10] = [
    "action",
    "userName",
    "userPrincipalName",
    "displayName",
    "givenName",
    "surname",
    "email",
    "active",
    "changes",
    "immutableId",
];

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvStats {
    /// Data rows, without the header.
    pub rows: usize,
    /// Bytes written, BOM included.
    pub bytes: u64,
    /// Lower-case hex sha256 of every byte written.
    pub sha256: String,
}

/// Writes the preview of `plan` to `out` and returns its size and sha256.
pub fn write_preview_csv<W: Write>(plan: &Plan, out: W) -> io::Result<CsvStats> {
    write_rows(plan.items.iter(), out)
}

/// Writes preview rows (already in preview order) to `out`.
pub fn write_rows<'a, W, I>(items: I, out: W) -> io::Result<CsvStats>
where
    W: Write,
    I: IntoIterator<Item = &'a PlanItem>,
{
    let mut hashing = HashingWriter {
        inner: out,
        hasher: Sha256::new(),
        bytes: 0,
    };
    hashing.write_all(BOM)?;
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(hashing);
    w.write_record(HEADER).map_err(io::Error::other)?;
    let mut rows = 0usize;
    for item in items {
        let record = row_fields(item);
        w.write_record(record.iter().map(|c| c.as_bytes()))
            .map_err(io::Error::other)?;
        rows += 1;
    }
    w.flush()?;
    let mut hashing = w
        .into_inner()
        .map_err(|e| io::Error::other(e.to_string()))?;
    hashing.flush()?;
    Ok(CsvStats {
        rows,
        bytes: hashing.bytes,
        sha256: hex(&hashing.hasher.finalize()),
    })
}

/// The cells of `item`'s preview row, exactly as written (neutralised): what an approved
/// preview is compared with, row by row (`src/sync/approval.rs`).
pub fn row_fields(item: &PlanItem) -> [Cow<'_, str>; 10] {
    let v = item.view();
    [
        Cow::Borrowed(v.action.as_str()),
        neutralise(v.user_name),
        neutralise(v.upn.unwrap_or_default()),
        neutralise(v.display_name.unwrap_or_default()),
        neutralise(v.given_name.unwrap_or_default()),
        neutralise(v.surname.unwrap_or_default()),
        neutralise(v.email.unwrap_or_default()),
        Cow::Borrowed(if v.active { "true" } else { "false" }),
        match neutralise(&item.changes_text()) {
            Cow::Borrowed(c) => Cow::Owned(c.to_owned()),
            owned => Cow::Owned(owned.into_owned()),
        },
        neutralise(v.immutable_id.unwrap_or_default()),
    ]
}

/// Prefixes `'` to a cell a spreadsheet would read as a formula: one that begins with `=`,
/// `+`, `-`, `@`, tab or carriage return (OWASP's list). This includes Immutable IDs, which
/// are base64 and may begin with `+`.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => Cow::Owned(format!("'{cell}")),
        _ => Cow::Borrowed(cell),
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Passes bytes through and hashes them on the way.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
