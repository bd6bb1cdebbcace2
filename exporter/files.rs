//! Reading a local file whole, safely: regular files only, with a size cap.
//!
//! Used for every file the exporter reads (its config, CA bundles, the web
//! config, the connector's files), so that a device (`/dev/zero`), a FIFO
//! that would block the open, or a huge file is refused with a clear error
//! instead of hanging or exhausting memory.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

/// Why a file could not be read (before any parsing).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("does not exist")]
    NotFound,
    #[error("cannot be read: {0}")]
    Unreadable(std::io::Error),
    #[error("is not a regular file")]
    NotAFile,
    #[error("is larger than {limit} bytes")]
    TooLarge { limit: u64 },
}

/// Reads a whole regular file of at most `max_bytes`, and its mtime.
///
/// Anything but a regular file (a directory, a FIFO that would block the
/// open, a device) is refused before it is opened. At most `max_bytes + 1`
/// bytes are read, enough to tell "too large" from "exactly at the cap".
pub fn read_capped(path: &Path, max_bytes: u64) -> Result<(Vec<u8>, SystemTime), ReadError> {
    let metadata = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ReadError::NotFound,
        _ => ReadError::Unreadable(e),
    })?;
    if !metadata.is_file() {
        return Err(ReadError::NotAFile);
    }

    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ReadError::NotFound,
        _ => ReadError::Unreadable(e),
    })?;
    // The mtime comes from the handle that is read, so it belongs to the same
    // file even if the connector replaces it in the meantime.
    let modified = file
        .metadata()
        .and_then(|m| m.modified())
        .map_err(ReadError::Unreadable)?;

    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Unreadable)?;
    if u64::try_from(bytes.len()).map_or(true, |len| len > max_bytes) {
        return Err(ReadError::TooLarge { limit: max_bytes });
    }
    Ok((bytes, modified))
}
