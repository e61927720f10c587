//! Two ends of a connection in one process ([`pair`]), so that sessions can be tested without
//! QUIC: each stream is two in-memory pipes ([`tokio::io::duplex`]), one per direction. As on
//! QUIC, finishing a stream ends what the other side reads, a close is seen by both ends (the
//! other end learns the code and the reason), and after it every stream fails. Unlike QUIC,
//! there is no limit on the streams open at once, and [`SendHalf::stopped`] returns at once.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use quinn::{ApplicationClose, ConnectionError, VarInt};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::{Mutex, mpsc, watch};

use super::{BoxFuture, Link, Receiver, SendHalf, Sender, WireStats};
use crate::protocol::Code;

/// Bytes a stream buffers in each direction before its writer waits for the reader.
const PIPE_BYTES: usize = 256 << 10;

/// How the connection was closed: by which end, with what code and reason.
#[derive(Debug, Clone)]
struct Closed {
    by_acceptor: bool,
    code: VarInt,
    reason: Bytes,
}

type Closing = watch::Receiver<Option<Closed>>;

/// One end of an in-memory connection.
pub struct MemoryLink {
    /// Whether this is the end that accepted the connection.
    acceptor: bool,
    closed: Arc<watch::Sender<Option<Closed>>>,
    to_peer: mpsc::UnboundedSender<(Sender, Receiver)>,
    incoming: Mutex<mpsc::UnboundedReceiver<(Sender, Receiver)>>,
}

/// A connection in memory: the end that dialled, then the end that accepted.
pub fn pair() -> (MemoryLink, MemoryLink) {
    let closed = Arc::new(watch::Sender::new(None));
    let (to_acceptor, from_dialler) = mpsc::unbounded_channel();
    let (to_dialler, from_acceptor) = mpsc::unbounded_channel();
    let end = |acceptor, to_peer, incoming| MemoryLink {
        acceptor,
        closed: closed.clone(),
        to_peer,
        incoming: Mutex::new(incoming),
    };
    (
        end(false, to_acceptor, from_acceptor),
        end(true, to_dialler, from_dialler),
    )
}

impl MemoryLink {
    fn reason(&self, c: &Closed) -> ConnectionError {
        if c.by_acceptor == self.acceptor {
            ConnectionError::LocallyClosed
        } else {
            ConnectionError::ApplicationClosed(ApplicationClose {
                error_code: c.code,
                reason: c.reason.clone(),
            })
        }
    }

    fn check_open(&self) -> Result<(), ConnectionError> {
        match self.close_reason() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Link for MemoryLink {
    fn open(&self) -> BoxFuture<'_, Result<(Sender, Receiver), ConnectionError>> {
        Box::pin(async move {
            self.check_open()?;
            let (here_out, there_in) = tokio::io::duplex(PIPE_BYTES);
            let (there_out, here_in) = tokio::io::duplex(PIPE_BYTES);
            let stream = |out, input| -> (Sender, Receiver) {
                (
                    Box::new(MemSend {
                        pipe: Some(out),
                        closing: CloseWait::new(self.closed.subscribe()),
                    }),
                    Box::new(MemRecv {
                        pipe: input,
                        closing: CloseWait::new(self.closed.subscribe()),
                    }),
                )
            };
            if self.to_peer.send(stream(there_out, there_in)).is_err() {
                self.check_open()?;
                return Err(ConnectionError::Reset);
            }
            Ok(stream(here_out, here_in))
        })
    }

    fn accept(&self) -> BoxFuture<'_, Result<(Sender, Receiver), ConnectionError>> {
        Box::pin(async move {
            let mut incoming = self.incoming.lock().await;
            let mut closing = self.closed.subscribe();
            tokio::select! {
                s = incoming.recv() => {
                    self.check_open()?;
                    s.ok_or(ConnectionError::Reset)
                }
                _ = closing.wait_for(|c| c.is_some()) => {
                    self.check_open()?;
                    Err(ConnectionError::Reset)
                }
            }
        })
    }

    fn close(&self, code: Code, reason: &[u8]) {
        self.closed.send_if_modified(|c| {
            if c.is_some() {
                return false;
            }
            *c = Some(Closed {
                by_acceptor: self.acceptor,
                code: code.varint(),
                reason: Bytes::copy_from_slice(reason),
            });
            true
        });
    }

    fn close_reason(&self) -> Option<ConnectionError> {
        self.closed.borrow().as_ref().map(|c| self.reason(c))
    }

    fn accepted(&self) -> bool {
        self.acceptor
    }

    fn remote(&self) -> String {
        "in memory".into()
    }

    fn stats(&self) -> WireStats {
        WireStats {
            detail: "in memory".into(),
            ..WireStats::default()
        }
    }
}

impl Drop for MemoryLink {
    /// As a QUIC connection whose last handle is dropped: closed with code 0.
    fn drop(&mut self) {
        self.close(Code::Done, b"");
    }
}

/// Wakes a stream blocked on its pipe when the connection closes.
struct CloseWait {
    closing: Closing,
    wait: Option<BoxFuture<'static, ()>>,
}

impl CloseWait {
    fn new(closing: Closing) -> CloseWait {
        CloseWait {
            closing,
            wait: None,
        }
    }

    /// An error if the connection is closed; else registers `cx` to be woken when it is.
    fn poll_check(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        let closing = &self.closing;
        let wait = self.wait.get_or_insert_with(|| {
            let mut rx = closing.clone();
            Box::pin(async move {
                let _ = rx.wait_for(|c| c.is_some()).await;
            })
        });
        if self.closing.borrow().is_some() || wait.as_mut().poll(cx).is_ready() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "connection closed",
            ));
        }
        Ok(())
    }
}

struct MemSend {
    /// `None` once finished.
    pipe: Option<DuplexStream>,
    closing: CloseWait,
}

struct MemRecv {
    pipe: DuplexStream,
    closing: CloseWait,
}

impl AsyncRead for MemRecv {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.closing.poll_check(cx)?;
        Pin::new(&mut self.pipe).poll_read(cx, buf)
    }
}

impl MemSend {
    fn pipe(&mut self, cx: &mut Context<'_>) -> std::io::Result<Pin<&mut DuplexStream>> {
        self.closing.poll_check(cx)?;
        match self.pipe.as_mut() {
            Some(p) => Ok(Pin::new(p)),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "stream finished",
            )),
        }
    }
}

impl AsyncWrite for MemSend {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.pipe(cx)?.poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.pipe(cx)?.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.finish();
        Poll::Ready(Ok(()))
    }
}

impl SendHalf for MemSend {
    fn write_chunks<'a>(
        &'a mut self,
        chunks: &'a mut [Bytes],
    ) -> BoxFuture<'a, std::io::Result<()>> {
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            for c in chunks.iter_mut() {
                self.write_all(c).await?;
                *c = Bytes::new();
            }
            Ok(())
        })
    }

    /// Dropping the writing end of the pipe ends the stream after what it holds.
    fn finish(&mut self) {
        self.pipe = None;
    }

    fn stopped(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn streams_carry_bytes_both_ways_and_a_close_reaches_both_ends() {
        let (a, b) = pair();
        let (mut send, mut recv) = a.open().await.unwrap();
        send.write_all(b"request").await.unwrap();
        send.finish();
        let (mut back, mut got) = b.accept().await.unwrap();
        let mut req = Vec::new();
        got.read_to_end(&mut req).await.unwrap();
        assert_eq!(req, b"request");
        back.write_chunks(&mut [Bytes::from_static(b"ans"), Bytes::from_static(b"wer")])
            .await
            .unwrap();
        back.finish();
        let mut answer = Vec::new();
        recv.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer");
        assert!(b.accepted() && !a.accepted());

        // A read waiting for data fails when the other end closes.
        let (_send, mut recv) = a.open().await.unwrap();
        let waiting = tokio::spawn(async move { recv.read_u8().await });
        b.close(Code::BadObject, b"forged");
        let e = tokio::time::timeout(std::time::Duration::from_secs(60), waiting)
            .await
            .expect("the read was not woken by the close")
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted);
        match a.close_reason() {
            Some(ConnectionError::ApplicationClosed(c)) => {
                assert_eq!(c.error_code, Code::BadObject.varint());
                assert_eq!(&c.reason[..], b"forged");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            b.close_reason(),
            Some(ConnectionError::LocallyClosed)
        ));
        assert!(a.open().await.is_err());
        assert!(b.accept().await.is_err());
    }
}
