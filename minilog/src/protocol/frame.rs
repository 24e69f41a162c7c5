//! Request framing: a 4-byte big-endian size, then that many bytes.
//!
//! The size is checked before anything is allocated, so a client cannot make the broker
//! reserve gigabytes by sending four bytes. Kafka closes the connection on an oversized
//! or negative size (`socket.request.max.bytes`); so do we.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The smallest request: api key, api version and correlation id.
pub const MIN_REQUEST_BYTES: usize = 8;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("request of {size} bytes is larger than the broker's maximum of {max} (--max-request-bytes)")]
    TooLarge { size: usize, max: usize },
    #[error("request size {0} is invalid")]
    BadSize(i32),
    #[error("connection closed in the middle of a request")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Checks a size prefix against the limits and returns the body length.
pub fn check_size(size: i32, max: usize) -> Result<usize, FrameError> {
    if size < MIN_REQUEST_BYTES as i32 {
        return Err(FrameError::BadSize(size));
    }
    let size = size as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    Ok(size)
}

/// Reads one frame. `Ok(None)` is a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, max: usize) -> Result<Option<Bytes>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 { Ok(None) } else { Err(FrameError::Truncated) };
        }
        got += n;
    }
    let size = check_size(i32::from_be_bytes(prefix), max)?;
    let mut body = BytesMut::zeroed(size);
    match reader.read_exact(&mut body).await {
        Ok(_) => Ok(Some(body.freeze())),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Truncated),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_frames_and_rejects_bad_sizes() {
        let mut input: &[u8] = &[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(&read_frame(&mut input, 100).await.unwrap().unwrap()[..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(read_frame(&mut input, 100).await.unwrap().is_none());
        let mut huge: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(read_frame(&mut huge, 100).await, Err(FrameError::TooLarge { .. })));
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(read_frame(&mut negative, 100).await, Err(FrameError::BadSize(-1))));
        let mut cut: &[u8] = &[0, 0, 0, 9, 1, 2];
        assert!(matches!(read_frame(&mut cut, 100).await, Err(FrameError::Truncated)));
    }
}
