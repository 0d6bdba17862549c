//! The test world: an in-process chatd on a free port ([`spawn_app`]), the
//! WebSocket and JSON calls a chatd process ([`ServerProcess`], shared with
//! the browser tests) answers, and WebSocket clients that wait for everything
//! with a bounded timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix::Recipient;
use awc::ClientResponse;
use chatd::actors::shutdown_coordinator::BeginShutdown;
use chatd::{Application, Config};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::server_process::ServerProcess;

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(300);

/// Logs go to the test output only when TEST_LOG is set.
fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        chatd::telemetry::init("debug", chatd::telemetry::LogFormat::Human);
    }
}

/// Settings for tests: a free port, one worker, no ticker.
pub fn test_config() -> Config {
    let mut config = Config::default_for_tests();
    config.api_port = 0;
    config.workers = 1;
    config.periodic_notification = None;
    config
}

/// A chatd running inside this test's actix system.
pub struct TestApp {
    pub address: SocketAddr,
    pub http: awc::Client,
    shutdown: Recipient<BeginShutdown>,
    stopped: tokio::sync::oneshot::Receiver<()>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    init_logs();
    let mut config = test_config();
    adjust(&mut config);
    let app = Application::build(config).expect("the app starts");
    let address = app.address();
    let shutdown = app.shutdown_trigger();
    let (done, stopped) = tokio::sync::oneshot::channel();
    actix_web::rt::spawn(async move {
        let _ = app.run_until_stopped().await;
        let _ = done.send(());
    });
    TestApp {
        address,
        http: awc::Client::builder().timeout(WAIT).finish(),
        shutdown,
        stopped,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.address)
    }

    /// Connects as `name` and returns the client and its `welcome` event.
    pub async fn connect_ws(&self, name: &str) -> (WsClient, Value) {
        connect_ws(&self.ws_url(&format!("?name={name}"))).await
    }

    /// Connects as `name` starting in `rooms` (`?room=` each).
    pub async fn connect_ws_in(&self, name: &str, rooms: &[&str]) -> (WsClient, Value) {
        connect_ws(&self.ws_url(&rooms_query(name, rooms))).await
    }

    /// Connects with this query string (`?since=…` and the like).
    pub async fn connect_ws_with(&self, query: &str) -> (WsClient, Value) {
        connect_ws(&self.ws_url(query)).await
    }

    /// `POST /notify?message=…`: the status and the JSON body.
    pub async fn post_notify(&self, message: &str) -> (u16, Value) {
        self.post_notify_with(&[("message", message)]).await
    }

    /// `POST /notify?message=…&room=…`, a notice for one room.
    pub async fn post_notify_to(&self, room: &str, message: &str) -> (u16, Value) {
        self.post_notify_with(&[("message", message), ("room", room)])
            .await
    }

    /// `POST /notify` with these query parameters.
    pub async fn post_notify_with(&self, query: &[(&str, &str)]) -> (u16, Value) {
        post_notify(&self.http, &self.url("/notify"), query).await
    }

    /// `POST /notify?message=…` with an `Idempotency-Key` header.
    pub async fn post_notify_keyed(&self, key: &str, message: &str) -> (u16, Value) {
        post_notify_keyed(&self.http, &self.url("/notify"), key, message).await
    }

    /// `GET /rooms`, as a map of room → members.
    pub async fn rooms(&self) -> std::collections::BTreeMap<String, u64> {
        let (status, body) = self.get_json("/rooms").await;
        assert_eq!(status, 200, "{body}");
        room_counts(&body)
    }

    /// `GET path`: the whole response, for headers and bodies that are not JSON.
    pub async fn get(&self, path: &str) -> ClientResponse {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("GET answers")
    }

    /// `GET path`: the status and the JSON body.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        get_json(&self.http, &self.url(path)).await
    }

    /// Polls `/status` until its `connections` is `expected`.
    pub async fn wait_for_connections(&self, expected: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, status) = self.get_json("/status").await;
            if status["connections"] == expected {
                return;
            }
            assert!(Instant::now() < deadline, "connections stayed at {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a drain as SIGTERM would.
    pub fn begin_shutdown(&self) {
        self.shutdown.do_send(BeginShutdown { cause: "test" });
    }

    /// Waits for the server to stop by itself.
    pub async fn wait_until_stopped(self) {
        tokio::time::timeout(WAIT, self.stopped)
            .await
            .expect("the server stops")
            .expect("the server task ends");
    }
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

impl WsClient {
    pub async fn connect(url: &str) -> Self {
        let (stream, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("the handshake finishes in time")
            .expect("the upgrade is accepted");
        Self { stream }
    }

    /// Sends a chat message in the documented format.
    pub async fn say(&mut self, text: &str) {
        let frame = serde_json::json!({ "type": "notification", "message": text });
        self.send_text(&frame.to_string()).await;
    }

    /// Sends a chat message to `room`.
    pub async fn say_in(&mut self, room: &str, text: &str) {
        let frame = serde_json::json!({ "type": "message", "room": room, "message": text });
        self.send_text(&frame.to_string()).await;
    }

    /// Joins `room` and returns the `joined` answer.
    pub async fn join(&mut self, room: &str) -> Value {
        let frame = serde_json::json!({ "type": "join", "room": room });
        self.send_text(&frame.to_string()).await;
        let joined = self.next_event_of("joined").await;
        assert_eq!(joined["room"], room, "{joined}");
        joined
    }

    /// Leaves `room` and waits for the `left` answer.
    pub async fn leave_room(&mut self, room: &str) {
        let frame = serde_json::json!({ "type": "leave", "room": room });
        self.send_text(&frame.to_string()).await;
        let left = self.next_event_of("left").await;
        assert_eq!(left["room"], room, "{left}");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text)).await;
    }

    pub async fn send(&mut self, message: Message) {
        self.stream.send(message).await.expect("the frame is sent");
    }

    /// The next event, skipping pings and pongs; fails after [`WAIT`].
    pub async fn next_event(&mut self) -> Value {
        match tokio::time::timeout(WAIT, self.next_text()).await {
            Ok(Some(text)) => serde_json::from_str(&text).expect("events are JSON"),
            Ok(None) => panic!("the connection ended while an event was awaited"),
            Err(_) => panic!("no event within {WAIT:?}"),
        }
    }

    /// The next event of `kind`, skipping others.
    pub async fn next_event_of(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let event = self.next_event().await;
            if event["type"] == kind {
                return event;
            }
            assert!(Instant::now() < deadline, "no {kind} event in time");
        }
    }

    /// Asserts that no event arrives for [`QUIET`].
    pub async fn expect_silence(&mut self) {
        if let Ok(Some(text)) = tokio::time::timeout(QUIET, self.next_text()).await {
            panic!("expected nothing, got {text}");
        }
    }

    /// Reads until the server closes the connection; fails after [`WAIT`].
    pub async fn ending(&mut self) -> Ending {
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
        tokio::time::timeout(WAIT, ending)
            .await
            .expect("the connection ends in time")
    }

    /// Closes the connection from the client side.
    pub async fn leave(mut self) {
        let _ = self.stream.close(None).await;
        let _ =
            tokio::time::timeout(WAIT, async { while self.stream.next().await.is_some() {} }).await;
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

/// What only the API tests ask of a [`ServerProcess`]: the same WebSocket
/// and JSON calls as [`TestApp`] offers.
impl ServerProcess {
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.address)
    }

    /// Connects as `name` and returns the client and its `welcome` event.
    pub async fn connect_ws(&self, name: &str) -> (WsClient, Value) {
        connect_ws(&self.ws_url(&format!("?name={name}"))).await
    }

    /// Connects with this query string (`?since=…` and the like).
    pub async fn connect_ws_with(&self, query: &str) -> (WsClient, Value) {
        connect_ws(&self.ws_url(query)).await
    }

    /// `GET path`: the status and the JSON body.
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        get_json(
            &awc::Client::builder().timeout(WAIT).finish(),
            &self.url(path),
        )
        .await
    }
}

/// Where a client is in `room`, from a `joined` event: `room:offset:epoch`,
/// the value of `/ws?since=`.
pub fn since_of(joined: &Value) -> String {
    format!(
        "{}:{}:{}",
        joined["room"].as_str().unwrap(),
        joined["offset"],
        joined["epoch"].as_str().unwrap()
    )
}

/// The messages of a `history` list, or of a list of events.
pub fn messages(events: &Value) -> Vec<&str> {
    events
        .as_array()
        .expect("a list of events")
        .iter()
        .map(|e| e["message"].as_str().expect("an event with a message"))
        .collect()
}

/// The offsets of a `history` list, or of a list of events.
pub fn offsets(events: &Value) -> Vec<u64> {
    events
        .as_array()
        .expect("a list of events")
        .iter()
        .map(|e| e["offset"].as_u64().expect("a stored event has an offset"))
        .collect()
}

/// `?name=…&room=…&room=…`
pub fn rooms_query(name: &str, rooms: &[&str]) -> String {
    let rooms: String = rooms.iter().map(|r| format!("&room={r}")).collect();
    format!("?name={name}{rooms}")
}

/// A `/rooms` body as a map of room → members.
pub fn room_counts(body: &Value) -> std::collections::BTreeMap<String, u64> {
    body["rooms"]
        .as_array()
        .expect("a rooms list")
        .iter()
        .map(|r| {
            (
                r["room"].as_str().unwrap().to_string(),
                r["members"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn connect_ws(url: &str) -> (WsClient, Value) {
    let mut client = WsClient::connect(url).await;
    let welcome = client.next_event().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (client, welcome)
}

/// `POST url` with these query parameters: the status and the JSON body.
pub async fn post_notify(http: &awc::Client, url: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let mut response = http
        .post(url)
        .query(&query)
        .unwrap()
        .send()
        .await
        .expect("POST /notify answers");
    let body = response.json::<Value>().await.expect("a JSON body");
    (response.status().as_u16(), body)
}

/// `GET url` with `http`: the status and the JSON body.
pub async fn get_json(http: &awc::Client, url: &str) -> (u16, Value) {
    let mut response = http.get(url).send().await.expect("GET answers");
    let body = response.json::<Value>().await.expect("a JSON body");
    (response.status().as_u16(), body)
}

/// `POST url?message=…` with `Idempotency-Key: key`: the status and the JSON body.
pub async fn post_notify_keyed(
    http: &awc::Client,
    url: &str,
    key: &str,
    message: &str,
) -> (u16, Value) {
    let mut response = http
        .post(url)
        .insert_header(("Idempotency-Key", key))
        .query(&[("message", message)])
        .unwrap()
        .send()
        .await
        .expect("POST /notify answers");
    let body = response.json::<Value>().await.expect("a JSON body");
    (response.status().as_u16(), body)
}
