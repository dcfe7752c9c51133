//! Reading length-prefixed frames from a byte stream, generic over the stream (the libp2p
//! transport reads its inbound streams with it; tests and the `stream_reader` fuzz target
//! feed it arbitrary bytes in arbitrary chunks).
//!
//! ```text
//! length (4 bytes, big-endian) | frame (length bytes)     repeated until the stream ends
//! ```

use std::io;

use futures::{AsyncRead, AsyncReadExt};

/// Why reading a frame from a stream failed. After any of these the stream is dropped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamReadError {
    /// The stream ended inside a length prefix or inside the frame it announced.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The length prefix announced more than the limit (refused before allocating).
    #[error("frame of {len} bytes announced, limit {limit}")]
    Oversized {
        /// The announced length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The stream failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The unit [`read_length_prefixed`] reads for `frame`: its 4-byte big-endian length,
/// then the frame. `None` for a frame of 4 GiB or more (no prefix can announce it).
pub fn length_prefixed(frame: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(frame.len()).ok()?;
    let mut out = Vec::with_capacity(4 + frame.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(frame);
    Some(out)
}

/// Fills `buf` from `stream`. `Ok(false)`: the stream ended cleanly before the first
/// byte; an end inside `buf` is [`StreamReadError::Truncated`].
async fn read_full<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut [u8],
) -> Result<bool, StreamReadError> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]).await {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(StreamReadError::Truncated),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Reads the next length-prefixed frame of at most `max_len` bytes. `Ok(None)`: the
/// stream ended cleanly, between two frames. A zero-length frame is `Ok(Some(vec![]))`
/// (the frame decoder then refuses it).
pub async fn read_length_prefixed<R: AsyncRead + Unpin>(
    stream: &mut R,
    max_len: usize,
) -> Result<Option<Vec<u8>>, StreamReadError> {
    let mut len = [0u8; 4];
    if !read_full(stream, &mut len).await? {
        return Ok(None);
    }
    let len = u32::from_be_bytes(len) as usize;
    // Refuse before allocating: the length is the peer's claim.
    if len > max_len {
        return Err(StreamReadError::Oversized {
            len,
            limit: max_len,
        });
    }
    let mut bytes = vec![0u8; len];
    if !read_full(stream, &mut bytes).await? && len > 0 {
        return Err(StreamReadError::Truncated);
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8], max_len: usize) -> (Vec<Vec<u8>>, Option<StreamReadError>) {
        futures::executor::block_on(async {
            let mut stream = futures::io::Cursor::new(bytes.to_vec());
            let mut frames = Vec::new();
            loop {
                match read_length_prefixed(&mut stream, max_len).await {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => return (frames, None),
                    Err(e) => return (frames, Some(e)),
                }
            }
        })
    }

    #[test]
    fn frames_then_clean_end() {
        let bytes = [&[0, 0, 0, 2, 7, 8][..], &[0, 0, 0, 0], &[0, 0, 0, 1, 9]].concat();
        let (frames, err) = read_all(&bytes, 10);
        assert_eq!(frames, vec![vec![7, 8], vec![], vec![9]]);
        assert!(err.is_none());
    }

    #[test]
    fn truncation_and_oversize_are_errors() {
        let (frames, err) = read_all(&[0, 0, 0, 2, 7], 10);
        assert!(frames.is_empty());
        assert!(matches!(err, Some(StreamReadError::Truncated)));
        let (_, err) = read_all(&[0, 0], 10);
        assert!(matches!(err, Some(StreamReadError::Truncated)));
        let (_, err) = read_all(&[0xff, 0xff, 0xff, 0xff], 10);
        assert!(matches!(
            err,
            Some(StreamReadError::Oversized {
                len: 0xffff_ffff,
                limit: 10
            })
        ));
    }
}
