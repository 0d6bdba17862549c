//! A TCP proxy in front of a test's Redis that can stall the subscribing
//! connections (the ones that sent SUBSCRIBE) without closing them: bytes
//! stop flowing both ways, the sockets stay open, as when a NAT or a load
//! balancer silently drops a long-lived connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One proxied connection: whether it subscribed, and whether it is stalled.
#[derive(Default)]
struct Link {
    subscriber: AtomicBool,
    stalled: AtomicBool,
}

pub struct StallProxy {
    port: u16,
    links: Arc<Mutex<Vec<Arc<Link>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl StallProxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:redis_port`.
    pub async fn start(redis_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let port = listener.local_addr().unwrap().port();
        let links: Arc<Mutex<Vec<Arc<Link>>>> = Arc::default();
        let registry = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", redis_port)).await else {
                    continue;
                };
                let link = Arc::new(Link::default());
                registry.lock().unwrap().push(link.clone());
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(forward(client_read, server_write, link.clone(), true));
                tokio::spawn(forward(server_read, client_write, link, false));
            }
        });
        Self {
            port,
            links,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stalls every subscribing connection open now; later ones flow.
    /// Answers how many were stalled.
    pub fn stall_subscriptions(&self) -> usize {
        let links = self.links.lock().unwrap();
        let subscribers = links.iter().filter(|l| l.subscriber.load(Ordering::SeqCst));
        subscribers
            .inspect(|l| l.stalled.store(true, Ordering::SeqCst))
            .count()
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `from` to `to` until either side closes; while the link is
/// stalled nothing is read or written.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Arc<Link>,
    from_client: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !unstalled(&link).await {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if from_client && names_subscribe(&buf[..n]) {
            link.subscriber.store(true, Ordering::SeqCst);
        }
        // What was read when the stall began is held, not delivered.
        if !unstalled(&link).await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits while `link` is stalled; `false` when it stays stalled past a
/// minute, so the proxy's tasks end on their own.
async fn unstalled(link: &Link) -> bool {
    for _ in 0..1200 {
        if !link.stalled.load(Ordering::SeqCst) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn names_subscribe(bytes: &[u8]) -> bool {
    bytes
        .windows(b"SUBSCRIBE".len())
        .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
}
