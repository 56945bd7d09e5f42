//! Bytes in and out of the HTTP connections, for the Admin UI's "Bytes
//! received and sent" chart: [`crate::serve()`] wraps each connection in
//! [`Counted`] when the Admin UI is on. WebSocket connections keep the
//! wrapper after the upgrade, so their frames count too. A host that serves
//! tally with its own server shows no bytes.
//!
//! Each connection adds up its own bytes and hands them to the shared
//! counters every [`BATCH`] bytes and when it closes, so a broadcast to
//! thousands of sockets does not make them all write the same two atomics.
//! The chart therefore lags a little behind quiet connections.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes counted since the last `take`. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ByteCounts(Arc<(AtomicU64, AtomicU64)>);

impl ByteCounts {
    /// Bytes received and sent since the last call.
    pub fn take(&self) -> (u64, u64) {
        (
            self.0.0.swap(0, Ordering::Relaxed),
            self.0.1.swap(0, Ordering::Relaxed),
        )
    }
}

/// Bytes a connection counts by itself before it adds them to the shared
/// counters.
pub const BATCH: u64 = 4096;

/// A connection whose traffic adds up in a [`ByteCounts`].
#[derive(Debug)]
pub struct Counted<T> {
    inner: T,
    counts: ByteCounts,
    /// Not yet added to `counts`.
    read: u64,
    written: u64,
}

impl<T> Counted<T> {
    pub fn new(inner: T, counts: ByteCounts) -> Self {
        Counted {
            inner,
            counts,
            read: 0,
            written: 0,
        }
    }

    fn add_read(&mut self, bytes: usize) {
        self.read += bytes as u64;
        if self.read >= BATCH {
            self.counts.0.0.fetch_add(self.read, Ordering::Relaxed);
            self.read = 0;
        }
    }

    fn add_written(&mut self, bytes: usize) {
        self.written += bytes as u64;
        if self.written >= BATCH {
            self.counts.0.1.fetch_add(self.written, Ordering::Relaxed);
            self.written = 0;
        }
    }
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        self.counts.0.0.fetch_add(self.read, Ordering::Relaxed);
        self.counts.0.1.fetch_add(self.written, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.add_read(read);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled {
            self.add_written(written);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = polled {
            self.add_written(written);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_and_writes_are_counted_in_batches_and_at_the_end() {
        let counts = ByteCounts::default();
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut counted = Counted::new(near, counts.clone());
        counted.write_all(b"hello").await.unwrap();
        far.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        counted.read_exact(&mut buf).await.unwrap();
        assert_eq!(
            counts.take(),
            (0, 0),
            "under a batch: kept by the connection"
        );
        counted.write_all(&[0; BATCH as usize]).await.unwrap();
        assert_eq!(counts.take(), (0, 5 + BATCH));
        drop(counted);
        assert_eq!(counts.take(), (2, 0), "the rest when it closes");
    }
}
