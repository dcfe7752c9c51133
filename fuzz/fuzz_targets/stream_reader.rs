//! The libp2p transport's inbound stream reader, `transport::read_length_prefixed`, on
//! arbitrary bytes delivered in arbitrary chunks (with `Interrupted` reads in between).
//! What it reads must be what a plain sequential parse of the bytes gives (frames, then a
//! clean end, a truncation or an oversized length, whatever the chunking), every frame
//! read must re-encode with `length_prefixed` to the bytes it came from, and each one goes
//! through `decode_frame` as the transport does. Never a panic.
#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use arbitrary::Arbitrary;
use futures::AsyncRead;
use libfuzzer_sys::fuzz_target;
use transport::{decode_frame, length_prefixed, read_length_prefixed, StreamReadError, MAX_MESSAGE_SIZE};

#[derive(Arbitrary, Debug)]
struct Input {
    /// Limit on a frame's length (the transport's is MAX_MESSAGE_SIZE + header).
    max_len: u16,
    /// Size of each read (0: an `Interrupted` error instead); cycled.
    chunks: Vec<u8>,
    data: Vec<u8>,
}

struct Chunked<'a> {
    data: &'a [u8],
    chunks: &'a [u8],
    next: usize,
    interrupted: bool,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let chunk = if self.chunks.is_empty() {
            usize::MAX
        } else {
            let c = self.chunks[self.next % self.chunks.len()];
            self.next += 1;
            // Never twice in a row: a reader must retry after `Interrupted`.
            if c == 0 && !self.interrupted {
                self.interrupted = true;
                return Poll::Ready(Err(io::ErrorKind::Interrupted.into()));
            }
            self.interrupted = false;
            usize::from(c.max(1))
        };
        let n = chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(n))
    }
}

#[derive(Debug, PartialEq)]
enum End {
    Clean,
    Truncated,
    Oversized(usize),
}

/// The reference: frames of `data` read front to back, and how reading stopped.
fn model(mut data: &[u8], max_len: usize) -> (Vec<&[u8]>, End) {
    let mut frames = Vec::new();
    loop {
        if data.is_empty() {
            return (frames, End::Clean);
        }
        if data.len() < 4 {
            return (frames, End::Truncated);
        }
        let len = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
        if len > max_len {
            return (frames, End::Oversized(len));
        }
        if data.len() - 4 < len {
            return (frames, End::Truncated);
        }
        frames.push(&data[4..4 + len]);
        data = &data[4 + len..];
    }
}

fuzz_target!(|input: Input| {
    let max_len = usize::from(input.max_len);
    let mut stream = Chunked {
        data: &input.data,
        chunks: &input.chunks,
        next: 0,
        interrupted: false,
    };
    let mut frames = Vec::new();
    let end = futures::executor::block_on(async {
        loop {
            match read_length_prefixed(&mut stream, max_len).await {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= max_len);
                    frames.push(frame)
                }
                Ok(None) => return End::Clean,
                Err(StreamReadError::Truncated) => return End::Truncated,
                Err(StreamReadError::Oversized { len, limit }) => {
                    assert_eq!(limit, max_len);
                    return End::Oversized(len);
                }
                Err(e) => panic!("an in-memory stream gave an I/O error: {e}"),
            }
        }
    });
    let (expected, expected_end) = model(&input.data, max_len);
    assert_eq!(end, expected_end);
    assert_eq!(frames.len(), expected.len());
    let mut consumed = Vec::new();
    for (frame, want) in frames.iter().zip(&expected) {
        assert_eq!(frame, want);
        consumed.extend(length_prefixed(frame).unwrap());
        let _ = decode_frame(frame, MAX_MESSAGE_SIZE);
    }
    assert_eq!(consumed, input.data[..consumed.len()]);
});
