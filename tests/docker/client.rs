//! The clients of the container tests: a real WebSocket client (as in
//! `tests/api/helpers.rs`) and a minimal HTTP/1.1 client, both to ports the
//! stack publishes on loopback, every wait bounded.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait for an event or an answer may take. Longer than
/// in the API tests: the stack shares two cores with the engine.
pub const WAIT: Duration = Duration::from_secs(20);

/// The offset a stored event carries: 1 or more. An event that was not
/// stored (chatd without Redis) has none, or 0.
pub fn stored_offset(event: &Value) -> Option<u64> {
    event["offset"].as_u64().filter(|offset| *offset > 0)
}

/// `ws://127.0.0.1:{port}/ws{query}`
pub fn ws_url(port: u16, query: &str) -> String {
    format!("ws://127.0.0.1:{port}/ws{query}")
}

/// A real WebSocket client over a real socket.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connection ended.
#[derive(Debug, PartialEq)]
pub enum Ending {
    Closed(u16),
    ClosedWithoutCode,
    Dropped,
}

/// What a bounded read found.
#[derive(Debug)]
pub enum Next {
    Event(Value),
    /// Nothing arrived in time; the connection is still open.
    Quiet,
    /// The connection ended.
    Ended,
}

/// Connects to `url` and returns the client and its `welcome` event.
pub async fn connect_ws(url: &str) -> (WsClient, Value) {
    let mut client = WsClient::connect(url).await;
    let welcome = client.next_event().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (client, welcome)
}

impl WsClient {
    /// Connects, or says why the handshake failed or took too long.
    pub async fn try_connect(url: &str) -> Result<Self, String> {
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await {
            Ok(Ok((stream, _))) => Ok(Self { stream }),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("no handshake within {WAIT:?}")),
        }
    }

    pub async fn connect(url: &str) -> Self {
        let (stream, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("the handshake with {url} finishes in time"))
            .unwrap_or_else(|err| panic!("the upgrade at {url} is accepted: {err}"));
        Self { stream }
    }

    /// Sends a chat message to the default room, in the documented format.
    pub async fn say(&mut self, text: &str) {
        let frame = serde_json::json!({ "type": "message", "message": text });
        self.stream
            .send(Message::text(frame.to_string()))
            .await
            .expect("the frame is sent");
    }

    /// The next event, skipping pings and pongs; fails after [`WAIT`].
    pub async fn next_event(&mut self) -> Value {
        match self.next_event_within(WAIT).await {
            Some(event) => event,
            None => panic!("no event within {WAIT:?}, or the connection ended"),
        }
    }

    /// The next event within `limit`; `None` when none came or the
    /// connection ended.
    pub async fn next_event_within(&mut self, limit: Duration) -> Option<Value> {
        let text = tokio::time::timeout(limit, self.next_text()).await.ok()??;
        Some(serde_json::from_str(&text).expect("events are JSON"))
    }

    /// The next event within `limit`, telling a quiet connection from an
    /// ended one.
    pub async fn next_within(&mut self, limit: Duration) -> Next {
        match tokio::time::timeout(limit, self.next_text()).await {
            Ok(Some(text)) => Next::Event(serde_json::from_str(&text).expect("events are JSON")),
            Ok(None) => Next::Ended,
            Err(_) => Next::Quiet,
        }
    }

    /// The next event of `kind`, skipping others.
    pub async fn next_event_of(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event_within(left).await {
                Some(event) if event["type"] == kind => return event,
                Some(_) => continue,
                None => panic!("no {kind} event within {WAIT:?}"),
            }
        }
    }

    /// The next `echo` whose message is `text`, skipping others.
    pub async fn next_echo_of(&mut self, text: &str) -> Value {
        self.next_event_where(&format!("echo of {text:?}"), |event| {
            event["type"] == "echo" && event["message"] == text
        })
        .await
    }

    /// The next event for which `wanted` holds, skipping others; fails after
    /// [`WAIT`], naming `what` it waited for.
    pub async fn next_event_where(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event_within(left).await {
                Some(event) if wanted(&event) => return event,
                Some(_) => continue,
                None => panic!("no {what} within {WAIT:?}"),
            }
        }
    }

    /// The echoes of every text in `texts`, in whatever order they come,
    /// skipping other events.
    pub async fn next_echoes_of(&mut self, texts: &[&str]) -> Vec<Value> {
        let mut echoes: Vec<Option<Value>> = vec![None; texts.len()];
        let deadline = Instant::now() + WAIT;
        while echoes.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(event) = self.next_event_within(left).await else {
                panic!("not every echo of {texts:?} within {WAIT:?}: {echoes:?}");
            };
            if event["type"] != "echo" {
                continue;
            }
            if let Some(n) = texts.iter().position(|text| event["message"] == *text) {
                echoes[n] = Some(event);
            }
        }
        echoes.into_iter().flatten().collect()
    }

    /// Reads until the server closes the connection; fails after `limit`.
    pub async fn ending(&mut self, limit: Duration) -> Ending {
        let ending = async {
            loop {
                match self.stream.next().await {
                    Some(Ok(Message::Close(Some(frame)))) => {
                        return Ending::Closed(u16::from(frame.code))
                    }
                    Some(Ok(Message::Close(None))) => return Ending::ClosedWithoutCode,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Ending::Dropped,
                }
            }
        };
        tokio::time::timeout(limit, ending)
            .await
            .expect("the connection ends in time")
    }

    /// Closes the connection from the client side.
    pub async fn leave(mut self) {
        let _ = self.stream.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while self.stream.next().await.is_some() {}
        })
        .await;
    }

    async fn next_text(&mut self) -> Option<String> {
        loop {
            match self.stream.next().await? {
                Ok(Message::Text(text)) => return Some(text.to_string()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }
}

/// Connects through `port` until the `welcome` names `server`; fails after
/// 8 connections that landed elsewhere (nginx spreads them round-robin).
pub async fn connect_to_server(port: u16, name: &str, server: &str) -> (WsClient, Value) {
    for _ in 0..8 {
        let (client, welcome) = connect_ws(&ws_url(port, &format!("?name={name}"))).await;
        if welcome["server"] == server {
            return (client, welcome);
        }
        client.leave().await;
    }
    panic!("8 connections through port {port} and none reached {server}");
}

/// One HTTP/1.1 request to `127.0.0.1:{port}`: the status and the body.
pub async fn http(method: &str, port: u16, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Connection: close\r\nContent-Length: 0\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} on port {port} answers in time"))
        .unwrap_or_else(|err| panic!("{method} {path} on port {port}: {err}"));
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {head}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        unchunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

/// `http` for a JSON answer.
pub async fn http_json(method: &str, port: u16, path: &str) -> (u16, Value) {
    let (status, body) = http(method, port, path).await;
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|err| panic!("{method} {path}: not JSON ({err}): {body}"));
    (status, json)
}

/// The body of a chunked transfer.
fn unchunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}
