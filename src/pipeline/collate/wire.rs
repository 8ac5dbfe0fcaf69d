//! The protocol between the daemon and its bake processes, over the child's stdin and
//! stdout. Every message is a frame: a little-endian `u64` length, then that many bytes.
//!
//! * The child starts by sending [`HELLO`] (so a binary of another version, or something
//!   that is not a bake server, is noticed before any work is sent to it).
//! * A request is three frames: a JSON [`Request`], the recipe's CSS, the body.
//! * A reply is a JSON [`Reply`] frame, followed by the baked document when it succeeded.
//!
//! Content travels as raw bytes, never escaped into JSON. The parent writes a whole
//! request before it reads, and the child reads a whole request before it writes, so
//! neither can block the other on a full pipe.

use serde::{Deserialize, Serialize};

use crate::config::CollateConfig;

/// The first frame a bake process sends; the version changes with the protocol.
pub(super) const HELLO: &[u8] = b"postpub-bake/1";

/// Largest JSON frame either side accepts (a reply carries warnings, capped by the baker).
pub(super) const MAX_HEADER_BYTES: u64 = 16 << 20;

/// One bake.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Request {
    /// Identifies the parsed recipe in the child's cache: the CSS's SHA-256 and the
    /// settings that change how it parses.
    pub key: String,
    /// `[pipeline.collate]` as the daemon has it (strict, timeout, budgets, …).
    pub config: CollateConfig,
}

/// How a bake ended (the child survived it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum BakeEnd {
    /// The baked document follows.
    Baked,
    /// The recipe does not parse (the same for every body).
    RecipeError,
    /// This body cannot be baked with this recipe.
    BakeError,
}

/// The answer to a [`Request`].
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Reply {
    /// What happened.
    pub outcome: BakeEnd,
    /// The reason, unless baked.
    #[serde(default)]
    pub error: String,
    /// The baker's warnings.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Frames over async streams (the daemon's side).
pub(super) mod tokio_io {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// Writes one frame.
    pub async fn write<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
        w.write_all(&(bytes.len() as u64).to_le_bytes()).await?;
        w.write_all(bytes).await
    }

    /// Reads one frame of at most `max` bytes.
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R, max: u64) -> std::io::Result<Vec<u8>> {
        let mut len = [0u8; 8];
        r.read_exact(&mut len).await?;
        let len = super::checked_len(len, max)?;
        let mut buf = vec![0u8; len];
        r.read_exact(&mut buf).await?;
        Ok(buf)
    }
}

/// Frames over blocking streams (the bake process's side).
pub(super) mod std_io {
    use std::io::{ErrorKind, Read, Write};

    /// Writes one frame.
    pub fn write<W: Write>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
        w.write_all(&(bytes.len() as u64).to_le_bytes())?;
        w.write_all(bytes)
    }

    /// Reads one frame of at most `max` bytes; `None` at a clean end of input (between
    /// frames), which is how the daemon says goodbye.
    pub fn read<R: Read>(r: &mut R, max: u64) -> std::io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 8];
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = super::checked_len(len, max)?;
        let mut buf = vec![0u8; len];
        r.read_exact(&mut buf)?;
        Ok(Some(buf))
    }
}

/// A frame's length, refused when over `max` (a garbled stream must not make the reader
/// allocate whatever eight random bytes say).
fn checked_len(len: [u8; 8], max: u64) -> std::io::Result<usize> {
    let len = u64::from_le_bytes(len);
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes, more than the {max} expected"),
        ));
    }
    usize::try_from(len).map_err(|_| std::io::Error::other("frame larger than memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let mut buf = Vec::new();
        std_io::write(&mut buf, b"hello").expect("write");
        std_io::write(&mut buf, b"").expect("write");
        let mut r = &buf[..];
        assert_eq!(
            std_io::read(&mut r, 5).expect("read"),
            Some(b"hello".to_vec())
        );
        assert_eq!(std_io::read(&mut r, 5).expect("read"), Some(Vec::new()));
        assert_eq!(std_io::read(&mut r, 5).expect("read"), None, "clean end");
        let mut r = &buf[..];
        let e = std_io::read(&mut r, 4).expect_err("over the maximum");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        // Cut in the middle of a frame: an error, not a clean end.
        let mut r = &buf[..10];
        assert!(std_io::read(&mut r, 5).is_err());
    }

    #[tokio::test]
    async fn async_and_blocking_frames_agree() {
        let mut buf = Vec::new();
        tokio_io::write(&mut buf, b"abc").await.expect("write");
        let mut r = &buf[..];
        assert_eq!(
            std_io::read(&mut r, 10).expect("read"),
            Some(b"abc".to_vec())
        );
        let mut r = &buf[..];
        assert_eq!(tokio_io::read(&mut r, 10).await.expect("read"), b"abc");
    }
}
