//! Streaming a download to the synchronous reader `process` holds: a task pulls the body and hands coalesced chunks over a small bounded channel; the reader waits on its own thread, never a runtime thread.

use std::io::{self, Read};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_types::error::display::DisplayErrorContext;
use tokio::sync::mpsc;

use super::answers::broken_download;
use crate::storage::ObjectError;

/// The next piece of a download's body, waiting at most `idle` for it.
pub(super) async fn next_piece(body: &mut ByteStream, idle: Duration) -> Result<Option<bytes::Bytes>, String> {
    match tokio::time::timeout(idle, body.try_next()).await {
        Ok(Ok(piece)) => Ok(piece),
        Ok(Err(e)) => Err(format!("the download broke off: {}", DisplayErrorContext(e))),
        Err(_) => Err(format!("the download stalled: no data for {idle:?}")),
    }
}

/// What the download task hands the reader.
pub(super) enum Piece {
    /// The next bytes of the object.
    Data(bytes::Bytes),
    /// The object ended here.
    End,
}

/// A synchronous reader over chunks sent by the download task.
pub(super) struct ChunkReader {
    pub(super) chunks: mpsc::Receiver<Result<Piece, ObjectError>>,
    pub(super) current: bytes::Bytes,
    pub(super) ended: bool,
    pub(super) bucket: String,
    pub(super) key: String,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            // Waits on this (blocking) thread; `futures`' executor rather than
            // `blocking_recv`, which panics inside a runtime (an `async fn
            // process` runs in one on its blocking thread).
            match futures::executor::block_on(self.chunks.recv()) {
                Some(Ok(Piece::Data(chunk))) => self.current = chunk,
                Some(Ok(Piece::End)) => self.ended = true,
                Some(Err(e)) => return Err(e.into_io_error()),
                // The task went away without reaching the end (the runtime
                // shut down, the task panicked): never a clean end of object.
                None => {
                    return Err(broken_download(
                        &self.bucket,
                        &self.key,
                        "the download stopped before the end of the object".into(),
                    )
                    .into_io_error())
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(pieces: Vec<Result<Piece, ObjectError>>) -> ChunkReader {
        let (tx, rx) = mpsc::channel(pieces.len().max(1));
        for piece in pieces {
            tx.try_send(piece)
                .unwrap_or_else(|_| unreachable!("room for every piece"));
        }
        ChunkReader {
            chunks: rx,
            current: bytes::Bytes::new(),
            ended: false,
            bucket: "b".into(),
            key: "1".into(),
        }
    }

    fn data(text: &str) -> Result<Piece, ObjectError> {
        Ok(Piece::Data(bytes::Bytes::copy_from_slice(text.as_bytes())))
    }

    #[test]
    fn a_download_that_reached_the_end_reads_to_a_clean_end() {
        let mut r = reader(vec![data("hello "), data("world"), Ok(Piece::End)]);
        let mut text = String::new();
        r.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello world");
        assert_eq!(r.read(&mut [0u8; 4]).unwrap(), 0, "and stays at the end");
    }

    #[test]
    fn a_download_that_vanished_is_an_error_never_the_end() {
        let mut r = reader(vec![data("hello")]);
        let mut text = String::new();
        let e = r.read_to_string(&mut text).unwrap_err();
        assert_eq!(text, "hello");
        let object = ObjectError::in_io_error(&e).expect("an ObjectError inside");
        assert!(object.is_transient(), "{object}");
        assert!(e.to_string().contains("stopped before the end"), "{e}");
    }

    #[test]
    fn a_download_that_broke_off_is_a_transient_error_after_its_data() {
        let failed = Err(broken_download("b", "1", "connection reset".into()));
        let mut r = reader(vec![data("hel"), failed]);
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).unwrap(), 3);
        let e = r.read(&mut buf).unwrap_err();
        assert!(
            ObjectError::in_io_error(&e).is_some_and(ObjectError::is_transient),
            "{e}"
        );
        assert!(r.read(&mut buf).is_err(), "still an error, not an end");
    }
}
