//! A connection's socket, registered with the runtime for input alone.
//!
//! Tokio's own `UnixStream` asks epoll for readability and writability
//! both, so each time a client reads a reply, the kernel's "send buffer
//! drained" wake-up reaches the server's epoll and wakes a parked worker
//! for nothing: one context switch on every request's path. Here the
//! socket is registered for input; a reply is written straight to it (it
//! is non-blocking), and only when the client's buffer is full is a
//! second registration, of a duplicate descriptor, made to wait for room.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, Interest, ReadBuf};

/// The socket, shared by the connection's reading and writing halves.
#[derive(Clone, Debug)]
pub(crate) struct Socket(Arc<AsyncFd<UnixStream>>);

impl Socket {
    /// Takes over a socket tokio accepted.
    pub(crate) fn new(stream: tokio::net::UnixStream) -> std::io::Result<Socket> {
        let std = stream.into_std()?;
        // `into_std` leaves the descriptor non-blocking, as the direct
        // writes need; said again here so that nothing rests on it.
        std.set_nonblocking(true)?;
        Ok(Socket(Arc::new(register(std, Interest::READABLE)?)))
    }

    /// Writes all of `bytes`, waiting for room when the client does not
    /// read.
    pub(crate) async fn write_all(&self, mut bytes: &[u8]) -> std::io::Result<()> {
        loop {
            let n = self.write_now(bytes)?;
            bytes = bytes.get(n..).unwrap_or_default();
            if bytes.is_empty() {
                return Ok(());
            }
            if let Err(e) = self.room().await {
                self.break_off();
                return Err(e);
            }
        }
    }

    /// Ends the connection both ways, at once: after a write that failed
    /// part-way, nothing more may follow on the stream (the client would
    /// read the rest of the frame from the next one), and a writer
    /// waiting for room is woken to fail.
    pub(crate) fn break_off(&self) {
        let _ = self.0.get_ref().shutdown(std::net::Shutdown::Both);
    }

    /// Writes what of `bytes` the socket takes now, without waiting: how
    /// many bytes (all of them unless the client's buffer is full).
    pub(crate) fn write_now(&self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut written = 0;
        while let Some(rest) = bytes.get(written..).filter(|r| !r.is_empty()) {
            match self.0.get_ref().write(rest) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.break_off();
                    return Err(e);
                }
            }
        }
        Ok(written)
    }

    /// Waits until the socket can take more bytes. A registration of its
    /// own, for writability, on a duplicate of the descriptor, dropped
    /// once there is room: epoll reports the state at registration, so
    /// room made before it is not missed.
    async fn room(&self) -> std::io::Result<()> {
        let dup = register(self.0.get_ref().try_clone()?, Interest::WRITABLE)?;
        let _ = dup.writable().await?;
        Ok(())
    }

    /// Ends the writing direction (the client reads the end).
    pub(crate) fn shutdown(&self) -> std::io::Result<()> {
        self.0.get_ref().shutdown(std::net::Shutdown::Write)
    }
}

/// Registers `stream` with the runtime for `interest`.
fn register(stream: UnixStream, interest: Interest) -> std::io::Result<AsyncFd<UnixStream>> {
    // SAFETY: the `AsyncFd` owns the stream, and the stream owns its
    // descriptor: it stays open, and `as_raw_fd` gives the same one,
    // until the `AsyncFd` (and the stream with it) is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(stream, interest) }?)
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let mut ready = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let asked = unfilled.len();
            match ready.try_io(|fd| fd.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    // Less than asked for: the socket is drained, so the
                    // next read waits for the next wake-up instead of
                    // asking the kernel once more to be told it would
                    // block (as tokio's own streams do; epoll is
                    // edge-triggered, and more data is a new edge).
                    if n > 0 && n < asked {
                        ready.clear_ready();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Not ready after all: the readiness is cleared, wait again.
                Err(_would_block) => {}
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn a_full_socket_takes_part_now_and_the_rest_once_the_peer_reads() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let bytes: Vec<u8> = (0..4u32 << 20).map(|i| (i % 253) as u8).collect();
        let got = runtime.block_on(async {
            let socket = Socket::new(tokio::net::UnixStream::from_std(ours).unwrap()).unwrap();
            let now = socket.write_now(&bytes).unwrap();
            assert!(
                now > 0 && now < bytes.len(),
                "a full socket takes part: {now}"
            );
            assert_eq!(socket.write_now(&bytes[now..]).unwrap(), 0, "and then none");
            let reader = std::thread::spawn(move || {
                let mut got = Vec::new();
                theirs.read_to_end(&mut got).unwrap();
                got
            });
            socket.write_all(&bytes[now..]).await.unwrap();
            socket.shutdown().unwrap();
            reader.join().unwrap()
        });
        assert!(got == bytes, "every byte once, in order");
    }
}
