//! The login deadline (OpenSSH's `LoginGraceTime`): a client that has not logged in within the
//! grace time loses its connection, whether it sent nothing, half a version line, or stalled in
//! the key exchange or authentication. russh has no such deadline of its own and runs each session
//! in a task the gateway cannot end, so the deadline sits in the stream under it: past the
//! deadline, before a login, reads and writes fail and russh ends the session. After the login the
//! stream passes everything straight through.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A stream that fails once its grace time is over unless [`LoggedIn::set`] was called first.
pub struct Deadline<S> {
    inner: S,
    /// `None` once the client logged in.
    grace: Option<Pin<Box<Sleep>>>,
    logged_in: Arc<AtomicBool>,
}

/// Marks the connection of a [`Deadline`] stream as logged in.
#[derive(Debug, Clone, Default)]
pub struct LoggedIn(Arc<AtomicBool>);

impl LoggedIn {
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// `inner`, cut off after `grace` unless the returned [`LoggedIn`] is set before.
pub fn deadline<S>(inner: S, grace: Duration) -> (Deadline<S>, LoggedIn) {
    let logged_in = LoggedIn::default();
    let stream = Deadline {
        inner,
        grace: Some(Box::pin(tokio::time::sleep(grace))),
        logged_in: logged_in.0.clone(),
    };
    (stream, logged_in)
}

impl<S> Deadline<S> {
    /// `Err` once the grace time is over without a login; registers for the deadline otherwise.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(grace) = &mut self.grace else {
            return Ok(());
        };
        if self.logged_in.load(Ordering::Acquire) {
            self.grace = None;
            return Ok(());
        }
        match grace.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(io::ErrorKind::TimedOut, "login grace time over")),
            Poll::Pending => Ok(()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn a_silent_peer_is_cut_off_at_the_deadline() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let (mut stream, _logged_in) = deadline(ours, Duration::from_millis(100));
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let err = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the read ends by itself")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(stream.write_all(b"x").await.is_err(), "writes fail too");
    }

    #[tokio::test]
    async fn a_login_lifts_the_deadline() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let (mut stream, logged_in) = deadline(ours, Duration::from_millis(100));
        theirs.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        logged_in.set();
        let wait = tokio::spawn(async move {
            let mut buf = [0u8; 5];
            stream.read_exact(&mut buf).await.map(|_| buf)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        theirs.write_all(b"later").await.unwrap();
        assert_eq!(&wait.await.unwrap().unwrap(), b"later");
    }
}
