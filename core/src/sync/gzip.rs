//! The one way stored payloads are compressed and cut (previews, managed sets, run reports):
//! gzip, then one stream cut into parts no larger than an object may hold, and read back with a
//! cap on the decompressed size, so a hostile or damaged object cannot exhaust memory.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

/// How hard to compress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Several times faster, ~1.5x the size: for what is saved often (the managed set).
    Fast,
    /// For what is written once per run (previews, reports).
    Default,
}

/// `bytes`, gzip-compressed.
pub fn gzip(bytes: &[u8], level: Level) -> Vec<u8> {
    let level = match level {
        Level::Fast => Compression::fast(),
        Level::Default => Compression::default(),
    };
    let mut enc = GzEncoder::new(Vec::with_capacity(bytes.len() / 4 + 64), level);
    // Writing into a Vec-backed encoder cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// `stream` cut into parts of at most `max_part` bytes, in order; at least one part (empty for
/// an empty stream).
pub fn split(stream: &[u8], max_part: usize) -> Vec<&[u8]> {
    let parts: Vec<&[u8]> = stream.chunks(max_part.max(1)).collect();
    if parts.is_empty() {
        vec![stream]
    } else {
        parts
    }
}

/// A gzip stream that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GunzipError {
    #[error("gzip: {0}")]
    Corrupt(String),
    #[error("larger than {0} bytes once decompressed")]
    TooLarge(u64),
}

/// Decompresses `gz` (one stream, or the parts of one stream joined), refusing more than `max`
/// bytes of output.
pub fn gunzip(gz: &[u8], max: u64) -> Result<Vec<u8>, GunzipError> {
    let mut out = Vec::new();
    GzDecoder::new(gz)
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| GunzipError::Corrupt(e.to_string()))?;
    if out.len() as u64 > max {
        return Err(GunzipError::TooLarge(max));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_join_back_into_the_stream() {
        let text: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for level in [Level::Fast, Level::Default] {
            let gz = gzip(&text, level);
            let parts = split(&gz, 1000);
            assert!(parts.len() > 1 && parts.iter().all(|p| p.len() <= 1000));
            assert_eq!(gunzip(&parts.concat(), 1 << 20), Ok(text.clone()));
        }
        assert_eq!(split(&[], 10), vec![&[] as &[u8]]);
    }

    #[test]
    fn too_large_or_damaged_streams_are_refused() {
        let gz = gzip(&vec![0u8; 10_000], Level::Default);
        assert_eq!(gunzip(&gz, 9_999), Err(GunzipError::TooLarge(9_999)));
        assert!(matches!(
            gunzip(b"not gzip", 10),
            Err(GunzipError::Corrupt(_))
        ));
    }
}
