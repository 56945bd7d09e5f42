//! Bytes in and out of the HTTP connections, for the Admin UI's "Bytes
//! received and sent" chart: [`crate::serve()`] wraps each connection in
//! [`Counted`] when the Admin UI is on. WebSocket connections keep the
//! wrapper after the upgrade, so their frames count too. A host that serves
//! tally with its own server shows no bytes.

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

/// A connection whose traffic adds up in a [`ByteCounts`].
#[derive(Debug)]
pub struct Counted<T> {
    inner: T,
    counts: ByteCounts,
}

impl<T> Counted<T> {
    pub fn new(inner: T, counts: ByteCounts) -> Self {
        Counted { inner, counts }
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
        if read > 0 {
            self.counts.0.0.fetch_add(read as u64, Ordering::Relaxed);
        }
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
            self.counts.0.1.fetch_add(written as u64, Ordering::Relaxed);
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
            self.counts.0.1.fetch_add(written as u64, Ordering::Relaxed);
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
    async fn reads_and_writes_are_counted() {
        let counts = ByteCounts::default();
        let (near, mut far) = tokio::io::duplex(64);
        let mut counted = Counted::new(near, counts.clone());
        counted.write_all(b"hello").await.unwrap();
        far.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        counted.read_exact(&mut buf).await.unwrap();
        assert_eq!(counts.take(), (2, 5));
        assert_eq!(counts.take(), (0, 0));
    }
}
