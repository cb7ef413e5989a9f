//! A TCP proxy that loses responses: it forwards a gRPC (HTTP/2) connection both ways,
//! but when armed it cuts the connection at the moment the server starts answering a call
//! (its first HEADERS frame on a stream), so the server has done the work and the client
//! never hears about it — the "lost response" of the fault drills.
//!
//! Only the server-to-client direction is parsed, and only frame headers (9 bytes:
//! length, type, flags, stream id); nothing is decoded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const FRAME_HEADERS: u8 = 0x1;

/// See the module docs.
pub struct LossyProxy {
    pub addr: SocketAddr,
    drops_left: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl LossyProxy {
    /// Proxies to `upstream`, losing the next `drops` responses.
    pub async fn start(upstream: SocketAddr, drops: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let drops_left = Arc::new(AtomicUsize::new(drops));
        let dropped = Arc::new(AtomicUsize::new(0));
        let task = {
            let drops_left = drops_left.clone();
            let dropped = dropped.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    tokio::spawn(pipe(client, server, drops_left.clone(), dropped.clone()));
                }
            })
        };
        Self {
            addr,
            drops_left,
            dropped,
            task,
        }
    }

    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Responses lost so far.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }

    /// Loses the next `n` responses.
    pub fn arm(&self, n: usize) {
        self.drops_left.store(n, Ordering::SeqCst);
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    drops_left: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_r, mut client_w) = client.into_split();
    let (mut server_r, mut server_w) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_r, &mut server_w).await;
        let _ = server_w.shutdown().await;
    });
    let mut header = [0u8; 9];
    loop {
        if server_r.read_exact(&mut header).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if server_r.read_exact(&mut payload).await.is_err() {
            break;
        }
        if header[3] == FRAME_HEADERS
            && stream != 0
            && drops_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            dropped.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if client_w.write_all(&header).await.is_err() || client_w.write_all(&payload).await.is_err()
        {
            break;
        }
    }
    // Both directions end: the client sees its connection die mid-call.
    upstream.abort();
}
