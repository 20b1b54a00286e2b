//! Session recording, the decisions apart from I/O: whether a login's pty sessions are recorded
//! (the installation's `SESSION_RECORDING`, overridden per user, overridden per host), and the
//! asciicast v2 file made from a recording's header facts and its stored chunks.

use std::io::Read as _;

use serde::Serialize;
use utoipa::ToSchema;

use crate::db::recordings::Recording;

/// Which level decided whether a session is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Installation,
    User,
    Host,
}

/// Whether sessions are recorded, and which level said so: the host's override if it has one,
/// else the user's, else the installation's setting.
pub fn decide(all: bool, user: Option<bool>, host: Option<bool>) -> (bool, Source) {
    match (host, user) {
        (Some(on), _) => (on, Source::Host),
        (None, Some(on)) => (on, Source::User),
        (None, None) => (all, Source::Installation),
    }
}

/// The asciicast v2 header line of a recording (with its newline).
pub fn header(rec: &Recording) -> String {
    let mut header = serde_json::json!({
        "version": 2,
        "width": rec.width,
        "height": rec.height,
        "timestamp": rec.started_at.0.timestamp(),
        "env": { "TERM": rec.term },
        "title": format!("{} {}", rec.via, rec.connection_id),
    });
    if let Some(ms) = rec.duration_ms {
        header["duration"] = serde_json::json!(ms as f64 / 1000.0);
    }
    let mut line = header.to_string();
    line.push('\n');
    line
}

/// Largest chunk accepted once decompressed: a gateway flushes far sooner (256 KiB), so anything
/// bigger is not one of ours.
pub const MAX_CHUNK_PLAIN_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("not gzip: {0}")]
    Gzip(#[from] std::io::Error),
    #[error("larger than {MAX_CHUNK_PLAIN_BYTES} bytes once decompressed")]
    TooLarge,
}

/// A stored chunk decompressed: asciicast v2 event lines.
pub fn unpack(gzip: &[u8]) -> Result<Vec<u8>, ChunkError> {
    let mut out = Vec::with_capacity(gzip.len() * 4);
    let read = flate2::read::MultiGzDecoder::new(gzip)
        .take(MAX_CHUNK_PLAIN_BYTES + 1)
        .read_to_end(&mut out)?;
    if read as u64 > MAX_CHUNK_PLAIN_BYTES {
        return Err(ChunkError::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_override_wins() {
        let cases = [
            (false, None, None, (false, Source::Installation)),
            (true, None, None, (true, Source::Installation)),
            (false, None, Some(true), (true, Source::Host)),
            (true, Some(false), None, (false, Source::User)),
            (true, Some(false), Some(true), (true, Source::Host)),
            (false, Some(true), Some(false), (false, Source::Host)),
        ];
        for (all, user, host, want) in cases {
            assert_eq!(decide(all, user, host), want, "{all} {user:?} {host:?}");
        }
    }

    #[test]
    fn chunks_unpack_and_junk_is_refused() {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"[0.5,\"o\",\"hi\"]\n").unwrap();
        let packed = enc.finish().unwrap();
        assert_eq!(unpack(&packed).unwrap(), b"[0.5,\"o\",\"hi\"]\n");
        assert!(unpack(b"not gzip").is_err());
    }
}
