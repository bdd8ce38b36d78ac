//! Fewer, larger writes on a client connection.
//!
//! Every gRPC stream of an HTTP/2 connection runs as a task of its own that hands its
//! frames to the connection's task. Tokio runs a task woken by the running one next (its
//! "LIFO slot"), so when many streams of one connection get data at once (a put seen by
//! a thousand watchers, a batch of acknowledged puts) the connection's task ran after
//! each stream's and wrote that stream's frame alone: one `writev` per message, and one
//! wake-up of the reader per message on the other side.
//!
//! [`Coalesce`] lets the first write of a burst (the writes up to a flush), when it is
//! small, wait one turn: it wakes its own task and answers `Pending`, which puts the
//! connection's task at the back of the run queue; the stream tasks already queued add
//! their frames meanwhile, and the next poll writes them all together. An idle runtime
//! polls the connection again at once, so a lone request pays one extra poll, not a delay.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A write this large is company enough: it goes at once (a busy connection's writes
/// are large already, and waiting a turn each would only slow it).
const SMALL: usize = 16 * 1024;

pub struct Coalesce<S> {
    inner: S,
    /// The current burst of writes (until the writer flushes) already waited its turn.
    waited: bool,
}

impl<S> Coalesce<S> {
    pub fn new(inner: S) -> Self {
        Coalesce {
            inner,
            waited: false,
        }
    }

    /// Whether a write of `len` bytes goes ahead now (or waits one turn first).
    fn go(&mut self, cx: &mut Context<'_>, len: usize) -> bool {
        if self.waited || len >= SMALL {
            return true;
        }
        self.waited = true;
        cx.waker().wake_by_ref();
        false
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.go(cx, buf.len()) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.go(cx, bufs.iter().map(|b| b.len()).sum()) {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// h2 flushes after writing out what it had: the next write starts a new burst.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        if flushed.is_ready() {
            this.waited = false;
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Coalesce<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_first_write_of_each_burst_waits_one_turn() {
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut io = Coalesce::new(Vec::new());
        let write = |io: &mut Coalesce<Vec<u8>>, cx: &mut Context<'_>, b: &[u8]| {
            Pin::new(io).poll_write(cx, b)
        };

        // Waits, and asks to be polled again.
        assert!(write(&mut io, &mut cx, b"a").is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        // The next poll writes, and so does every write until the flush.
        assert!(matches!(write(&mut io, &mut cx, b"a"), Poll::Ready(Ok(1))));
        assert!(matches!(write(&mut io, &mut cx, b"b"), Poll::Ready(Ok(1))));
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        // A new burst waits again.
        assert!(write(&mut io, &mut cx, b"c").is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(matches!(write(&mut io, &mut cx, b"c"), Poll::Ready(Ok(1))));
        assert_eq!(io.inner, b"abc");
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        // A large write needs no company.
        let big = vec![0; SMALL];
        assert!(write(&mut io, &mut cx, &big).is_ready());
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }
}
