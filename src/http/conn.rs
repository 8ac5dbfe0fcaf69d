//! Connections of the HTTP server, and the limits that keep a client from holding one (and
//! what it holds: a task, a socket, maybe a database connection of a streamed read)
//! forever:
//! * headers must arrive within [`HEADER_READ_TIMEOUT`], counted from the moment the
//!   server waits for them: on a new connection and after each response of a kept-alive
//!   one, so an idle or half-sent connection is closed;
//! * a response write that makes no progress for [`WRITE_STALL_TIMEOUT`] (the client
//!   stopped reading) closes the connection ([`StallGuard`]).
//!
//! The accept loop itself is [`super::HttpServer::run`]; it serves HTTP/1.1 with hyper
//! and stops gracefully (requests in progress finish, idle connections close).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a client may take to send a request's headers, and how long a kept-alive
/// connection may stay idle between requests.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a response write may wait for the client to read.
pub(crate) const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An I/O stream whose writes fail with `TimedOut` once one has been pending for longer
/// than its limit; reads are left alone (hyper bounds the wait for headers itself).
pub(crate) struct StallGuard<T> {
    inner: T,
    limit: Duration,
    /// Running while a write (or flush) is pending; reset by any progress.
    stalled_since: Option<Pin<Box<Sleep>>>,
}

impl<T> StallGuard<T> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled_since: None,
        }
    }

    /// Progress on a write resets the clock; a pending one starts (or checks) it.
    fn watch<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match poll {
            Poll::Ready(r) => {
                self.stalled_since = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .stalled_since
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client read nothing for {}",
                            humantime::format_duration(limit)
                        ),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_nobody_reads_fails_after_the_limit() {
        // A 1-byte-buffer duplex: the second write waits for a reader that never comes.
        let (a, _b) = tokio::io::duplex(1);
        let mut g = StallGuard::new(a, Duration::from_millis(100));
        let started = std::time::Instant::now();
        let e = g.write_all(b"hello").await.expect_err("stalled");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_slow_but_steady_reader_is_fine() {
        let (a, mut b) = tokio::io::duplex(1);
        let mut g = StallGuard::new(a, Duration::from_millis(300));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut byte = [0u8; 1];
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                tokio::io::AsyncReadExt::read_exact(&mut b, &mut byte)
                    .await
                    .expect("read");
                got.push(byte[0]);
            }
            got
        });
        g.write_all(b"hello")
            .await
            .expect("each byte within the limit");
        assert_eq!(reader.await.expect("reader"), b"hello");
    }
}
