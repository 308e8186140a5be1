//! Connections that a handler can kill: the acceptor wraps each TCP stream so that, once a
//! write has been applied, the sandbox can abort the connection with a TCP reset instead of
//! sending the answer — the failure that makes naive clients create duplicates.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Live connections by peer address, each with its kill switch.
#[derive(Debug, Clone, Default)]
pub(crate) struct Connections {
    inner: Arc<Mutex<HashMap<SocketAddr, Arc<AtomicBool>>>>,
}

impl Connections {
    /// Marks the connection from `peer` to be aborted before it sends anything more.
    pub(crate) fn kill(&self, peer: &SocketAddr) -> bool {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(peer) {
            Some(flag) => {
                flag.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    fn register(&self, peer: SocketAddr) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(peer, flag.clone());
        flag
    }

    fn forget(&self, peer: &SocketAddr) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(peer);
    }
}

/// Accepts TCP connections and wraps them in [`KillableStream`].
pub(crate) struct KillableAcceptor {
    listener: TcpListener,
    local: SocketAddr,
    connections: Connections,
}

impl KillableAcceptor {
    /// Wraps a bound listener.
    pub(crate) fn new(listener: TcpListener, connections: Connections) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self {
            listener,
            local,
            connections,
        })
    }
}

impl Acceptor for KillableAcceptor {
    type Io = KillableStream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        vec![LocalAddr(self.local.into())]
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (stream, peer) = self.listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let killed = self.connections.register(peer);
        let io = KillableStream {
            stream,
            peer,
            killed,
            connections: self.connections.clone(),
        };
        Ok((
            io,
            LocalAddr(self.local.into()),
            RemoteAddr(peer.into()),
            Scheme::HTTP,
        ))
    }
}

/// A TCP stream that fails every operation, after resetting the connection, once killed.
pub(crate) struct KillableStream {
    stream: TcpStream,
    peer: SocketAddr,
    killed: Arc<AtomicBool>,
    connections: Connections,
}

impl KillableStream {
    fn check(&self) -> io::Result<()> {
        if self.killed.load(Ordering::SeqCst) {
            // Linger 0 turns the close into a reset: the client sees the connection die
            // without a single byte of the answer.
            let _ = socket_reset(&self.stream);
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "sandbox dropped the connection",
            ));
        }
        Ok(())
    }
}

fn socket_reset(stream: &TcpStream) -> io::Result<()> {
    stream.set_zero_linger()
}

impl Drop for KillableStream {
    fn drop(&mut self) {
        self.connections.forget(&self.peer);
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
