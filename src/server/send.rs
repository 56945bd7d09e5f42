//! A bound on how long a connection may refuse what it is sent: a write
//! that makes no progress for `--send-timeout` fails, which ends the
//! connection.
//!
//! Without it, a client that keeps its TCP connection open but never reads
//! holds everything queued for it: the kernel's buffers fill, then
//! engine.io's writer waits on the socket for ever, and it keeps the
//! session (its queue of up to 128 packets, a join answer of history each)
//! from being closed, even after the heartbeat gave up on it. Measured: one
//! such WebSocket that joined a conversation of 50 long messages 100 times
//! held 22 MiB, still connected 90 s later. With the bound the write
//! fails, the reader is ended too, and engine.io closes the session.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A stream whose writes fail once they have been stuck for `timeout`.
#[derive(Debug)]
pub struct SendTimeout<T> {
    inner: T,
    timeout: Duration,
    /// Counted when a write times out.
    timeouts: Option<metrics::Counter>,
    /// Running while the writes are stuck; `None` while they progress.
    stuck: Option<Pin<Box<Sleep>>>,
    /// Set once the bound was passed: every later write and read fails too.
    expired: bool,
    /// The task waiting to read, woken when the bound is passed so that
    /// the connection's reader ends at once too (a WebSocket's reader would
    /// otherwise wait for the heartbeat to give up).
    reader: Option<std::task::Waker>,
}

impl<T> SendTimeout<T> {
    /// `timeout` zero means no bound.
    pub fn new(inner: T, timeout: Duration, timeouts: Option<metrics::Counter>) -> Self {
        SendTimeout {
            inner,
            timeout,
            timeouts,
            stuck: None,
            expired: false,
            reader: None,
        }
    }

    /// What a write that polled `polled` becomes: progress clears the
    /// clock, a wait starts it (or finds it run out).
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if self.expired {
            return Poll::Ready(Err(timed_out()));
        }
        if polled.is_ready() || self.timeout.is_zero() {
            self.stuck = None;
            return polled;
        }
        let timeout = self.timeout;
        let stuck = self
            .stuck
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stuck.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.expired = true;
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
        if let Some(timeouts) = &self.timeouts {
            timeouts.increment(1);
        }
        tracing::debug!("closing a connection that read nothing it was sent for {timeout:?}");
        Poll::Ready(Err(timed_out()))
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the peer read nothing it was sent within the send timeout",
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for SendTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired {
            return Poll::Ready(Err(timed_out()));
        }
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_pending() {
            self.reader = Some(cx.waker().clone());
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_nobody_reads_fails_after_the_timeout_and_one_read_goes_on() {
        // A pipe with a small buffer, whose other end does not read.
        let (near, mut far) = tokio::io::duplex(1024);
        let mut stream = SendTimeout::new(near, Duration::from_millis(200), None);
        let chunk = vec![0u8; 4096];
        let failed = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&chunk))
            .await
            .expect("the write ends");
        assert_eq!(failed.unwrap_err().kind(), io::ErrorKind::TimedOut);

        // A reader that keeps up is never cut off, however long it takes.
        let (near, mut far2) = tokio::io::duplex(1024);
        let mut stream = SendTimeout::new(near, Duration::from_millis(200), None);
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut far2, &mut sink)
                .await
                .unwrap();
            sink.len()
        });
        for _ in 0..20 {
            stream.write_all(&chunk).await.unwrap();
        }
        stream.shutdown().await.unwrap();
        drop(stream);
        assert_eq!(reader.await.unwrap(), 20 * 4096);
        far.shutdown().await.ok();
    }
}
