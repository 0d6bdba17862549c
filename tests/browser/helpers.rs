//! The test world: a chatd process and a browser per test ([`TestChat`]), a
//! chromedriver on a free loopback port behind a guard ([`Browser`]), and a
//! [`Page`] per person with intent methods (`say`, `wait_for_bubble`, ...),
//! every wait bounded.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::redis_server::RedisServer;
use crate::server_process::ServerProcess;

/// How long any single wait may take before the test fails. Generous: two
/// headless browsers share a small machine with the compiler.
pub const WAIT: Duration = Duration::from_secs(30);

/// WebDriver's Enter key, as `send_keys` spells it.
pub const ENTER: &str = "\u{e007}";
/// WebDriver's Shift key (held until [`RELEASE`]).
pub const SHIFT: &str = "\u{e008}";
/// Releases held modifier keys.
pub const RELEASE: &str = "\u{e000}";

/// Light or dark, for the `prefers-color-scheme` media query.
#[derive(Clone, Copy, Debug)]
pub enum Scheme {
    Light,
    Dark,
}

/// The HS256 secret of [`TestChat::start_with_tokens`].
pub const SECRET: &str = "browser-test-secret-0123456789abcdef";

/// An HS256 token for [`SECRET`], signed here as an application would: user
/// `sub` called `name`, valid for `valid_for`, for any room.
pub fn token(sub: &str, name: &str, valid_for: Duration) -> String {
    sign(json!({ "sub": sub, "name": name, "exp": unix_now() + valid_for.as_secs() }))
}

/// Like [`token`] (valid for an hour), allowing only `rooms`.
pub fn token_for_rooms(sub: &str, name: &str, rooms: &[&str]) -> String {
    sign(json!({ "sub": sub, "name": name, "exp": unix_now() + 3600, "rooms": rooms }))
}

/// Like [`token`], but it expired two minutes ago (past any leeway).
pub fn expired_token(sub: &str, name: &str) -> String {
    sign(json!({ "sub": sub, "name": name, "exp": unix_now() - 120 }))
}

/// Seconds since 1970, as `exp` counts them.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

fn sign(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("an HMAC key"),
    )
    .expect("the token is signed")
}

/// Whether the browser draws scrollbars. Pictures for the README hide them;
/// a test about a stray scrollbar needs them drawn.
#[derive(Clone, Copy, Debug)]
pub enum Scrollbars {
    Hidden,
    Shown,
}

/// One test's world: its own chatd process and its own browser to open the
/// chat page in; with [`TestChat::start_with_redis`], its own Redis too.
pub struct TestChat {
    pub server: ServerProcess,
    browser: Browser,
    /// chatd's settings, for a restart or a second process.
    env: Vec<(String, String)>,
    // Dropped after the servers (fields drop in order): they never see it go.
    _redis: Option<RedisServer>,
}

impl TestChat {
    /// Starts a browser and chatd, or returns `None` when the browser tests
    /// skip (see [`Browser::launch`]).
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// Like [`TestChat::start`], with tokens required: chatd verifies HS256
    /// tokens signed with [`SECRET`] (see [`token`]).
    pub fn start_with_tokens() -> Option<Self> {
        Self::start_with(&[("AUTH_JWT_SECRET", SECRET)])
    }

    /// Like [`TestChat::start`], with `env` added to chatd's environment.
    pub fn start_with(env: &[(&str, &str)]) -> Option<Self> {
        let browser = Browser::launch()?;
        Some(Self::with_browser(browser, env, None))
    }

    /// Like [`TestChat::start_with`], with a `redis-server` of its own behind
    /// chatd (`REDIS_URL`), so the rooms' history outlives a chatd process.
    /// `None` when the test skips (no browser, or no redis-server outside CI).
    pub fn start_with_redis(env: &[(&str, &str)]) -> Option<Self> {
        let browser = Browser::launch()?;
        let redis = RedisServer::start_or_skip("a browser test with Redis behind chatd")?;
        Some(Self::with_browser(browser, env, Some(redis)))
    }

    fn with_browser(browser: Browser, env: &[(&str, &str)], redis: Option<RedisServer>) -> Self {
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(redis) = &redis {
            env.push(("REDIS_URL".into(), redis.url()));
        }
        let server = ServerProcess::start(&pairs(&env));
        Self {
            server,
            browser,
            env,
            _redis: redis,
        }
    }

    /// Another chatd with the same settings (the same Redis), on its own port.
    pub fn start_another_server(&self) -> ServerProcess {
        ServerProcess::start(&pairs(&self.env))
    }

    /// Starts a fresh chatd with the same settings on the port `stopped` used.
    pub fn restart_on_same_port(&self, stopped: &ServerProcess) -> ServerProcess {
        let port = stopped.address.port().to_string();
        let mut env = pairs(&self.env);
        env.push(("API_PORT", &port));
        ServerProcess::start(&env)
    }

    /// A fresh browser showing `server`'s chat page, connected as `name`.
    pub async fn open_chat_on(&mut self, server: &ServerProcess, name: &str) -> Page {
        let page = self.browser.open(&server.url("/")).await;
        page.wait_for_state("connected").await;
        page.set_name(name).await;
        page
    }

    /// Waits until `server` is connected to Redis and follows `rooms` room
    /// channels, so what another process says in them reaches its pages.
    pub async fn wait_until_relaying(&self, server: &ServerProcess, rooms: u64) {
        let client = awc::Client::builder().timeout(WAIT).finish();
        let deadline = Instant::now() + WAIT;
        loop {
            let mut response = client
                .get(server.url("/status"))
                .send()
                .await
                .expect("GET /status answers");
            let status: Value = response.json().await.expect("the status is JSON");
            let redis = &status["redis"];
            if redis["state"] == "connected" && redis["room_channels"] == rooms {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never followed {rooms} room channels: {status}",
                server.address
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A WebSocket client of the test's own (no browser) in `general`.
    pub async fn bot(&self, name: &str) -> Bot {
        let url = format!("ws://{}/ws?name={name}", self.server.address);
        let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("the handshake finishes in time")
            .expect("the upgrade is accepted");
        Bot { socket }
    }

    /// A fresh browser following a sign-in link, `/#token=…` (or
    /// `/#room&token=…` with `room`); returns once the page has loaded,
    /// connected or not.
    pub async fn open_signed_in_link(&mut self, room: Option<&str>, token: &str) -> Page {
        let fragment = match room {
            Some(room) => format!("/#{room}&token={token}"),
            None => format!("/#token={token}"),
        };
        self.browser.open(&self.server.url(&fragment)).await
    }

    /// A fresh browser showing `path`; returns once the page has loaded,
    /// connected or not.
    pub async fn open_page(&mut self, path: &str) -> Page {
        self.browser.open(&self.server.url(path)).await
    }

    /// A fresh browser signed in with a token for `sub`/`name` (valid for
    /// an hour) from a `/#token=…` link, connected.
    pub async fn open_chat_signed_in(&mut self, sub: &str, name: &str) -> Page {
        let token = token(sub, name, Duration::from_secs(3600));
        let page = self.open_signed_in_link(None, &token).await;
        page.wait_for_state("connected").await;
        page
    }

    /// A fresh browser showing the chat page, connected under the name the
    /// server gave it.
    pub async fn open_chat(&mut self) -> Page {
        self.open_chat_at("/").await
    }

    /// A fresh browser showing `path` (a link such as `/#ops`), connected.
    pub async fn open_chat_at(&mut self, path: &str) -> Page {
        let page = self.browser.open(&self.server.url(path)).await;
        page.wait_for_state("connected").await;
        page
    }

    /// A fresh browser showing the chat page, connected as `name`.
    pub async fn open_chat_as(&mut self, name: &str) -> Page {
        let page = self.open_chat().await;
        page.set_name(name).await;
        page
    }

    /// A fresh browser showing the chat page in a colour scheme and a window
    /// size; returns once the page has loaded.
    pub async fn open_chat_with(&mut self, scheme: Scheme, size: (u32, u32)) -> Page {
        self.browser
            .open_with(&self.server.url("/"), scheme, size)
            .await
    }

    /// A fresh browser showing `path` in a window of `size`, with
    /// scrollbars drawn as a desktop browser draws them.
    pub async fn open_chat_showing_scrollbars(&mut self, path: &str, size: (u32, u32)) -> Page {
        self.browser
            .open_window(
                &self.server.url(path),
                Scheme::Light,
                size,
                Scrollbars::Shown,
            )
            .await
    }

    /// Starts a fresh chatd, with the same settings, on the port the stopped
    /// one used.
    pub fn restart_server(&mut self) {
        self.server = self.restart_on_same_port(&self.server);
    }

    /// Waits until `GET /rooms/{room}/presence` counts `connections` for
    /// user `id` (0: not listed).
    pub async fn wait_for_connections(&self, room: &str, id: &str, connections: u64) {
        let client = awc::Client::builder().timeout(WAIT).finish();
        let deadline = Instant::now() + WAIT;
        loop {
            let mut response = client
                .get(self.server.url(&format!("/rooms/{room}/presence")))
                .send()
                .await
                .expect("GET /rooms/{R}/presence answers");
            let body: Value = response.json().await.expect("the presence is JSON");
            let now = body["users"]
                .as_array()
                .and_then(|users| users.iter().find(|u| u["id"] == id))
                .map_or(0, |u| u["connections"].as_u64().unwrap_or(0));
            if now == connections {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never had {connections} connections in {room}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `POST /notify?message=…`; returns the status.
    pub async fn post_notify(&self, message: &str) -> u16 {
        self.post_notify_query(&[("message", message)]).await
    }

    /// `POST /notify?message=…&room=…`, for `room`'s members only; returns
    /// the status.
    pub async fn post_notify_in(&self, room: &str, message: &str) -> u16 {
        self.post_notify_query(&[("message", message), ("room", room)])
            .await
    }

    async fn post_notify_query(&self, query: &[(&str, &str)]) -> u16 {
        let client = awc::Client::builder().timeout(WAIT).finish();
        let response = client
            .post(self.server.url("/notify"))
            .query(&query)
            .expect("the query encodes")
            .send()
            .await
            .expect("POST /notify answers");
        response.status().as_u16()
    }
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A chat client without a page, for saying many things quickly.
pub struct Bot {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Bot {
    /// Says each of `texts` in `general`, then waits for the echo of the
    /// last: once it is back, every one of them is stored.
    pub async fn say_all(&mut self, texts: &[String]) {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        for text in texts {
            let frame = json!({ "type": "message", "room": "general", "message": text });
            self.socket
                .send(Message::text(frame.to_string()))
                .await
                .expect("the bot's message is sent");
        }
        let last = texts.last().expect("something to say");
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = tokio::time::timeout(left, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no echo of {last:?} within {WAIT:?}"))
                .expect("the bot's connection stays open")
                .expect("the bot reads a frame");
            let Message::Text(text) = message else {
                continue;
            };
            let event: Value = serde_json::from_str(&text).expect("events are JSON");
            assert_ne!(event["type"], "error", "the bot was refused: {event}");
            if event["type"] == "echo" && event["message"] == json!(last) {
                return;
            }
        }
    }
}

/// A chromedriver process group; dropping it ends chromedriver and every
/// browser it started, and removes their profiles.
pub struct Browser {
    driver: Child,
    url: String,
    chromium: PathBuf,
    profiles: Vec<PathBuf>,
}

impl Browser {
    /// Starts chromedriver, or returns `None` (after saying so loudly) when
    /// chromium or chromedriver is not installed. Under `CI=true` a missing
    /// browser fails the test instead: CI must run these.
    pub fn launch() -> Option<Self> {
        let chromium = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find_map(|name| find_program("CHROMIUM", name));
        let driver = find_program("CHROMEDRIVER", "chromedriver");
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            let message = "browser tests need chromium and chromedriver \
                (Debian: apt-get install chromium chromium-driver)";
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("{message}");
            }
            // Straight to stderr: the test harness would swallow eprintln!.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {message} ***\n");
            });
            return None;
        };
        let port = free_port();
        let verbose = std::env::var_os("TEST_LOG").is_some();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(if verbose {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .stderr(if verbose {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            // Its own process group, so the guard can end the browsers too.
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let browser = Self {
            driver: child,
            url: format!("http://127.0.0.1:{port}"),
            chromium,
            profiles: Vec::new(),
        };
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(browser)
    }

    /// A fresh browser (its own profile, so its own localStorage) showing `url`.
    pub async fn open(&mut self, url: &str) -> Page {
        self.open_with(url, Scheme::Light, (900, 700)).await
    }

    /// Like [`Browser::open`], in a colour scheme and a window size.
    pub async fn open_with(&mut self, url: &str, scheme: Scheme, size: (u32, u32)) -> Page {
        self.open_window(url, scheme, size, Scrollbars::Hidden)
            .await
    }

    /// Like [`Browser::open_with`], choosing whether scrollbars are drawn.
    pub async fn open_window(
        &mut self,
        url: &str,
        scheme: Scheme,
        size: (u32, u32),
        scrollbars: Scrollbars,
    ) -> Page {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let profile = std::env::temp_dir().join(format!(
            "chatd-browser-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        self.profiles.push(profile.clone());
        let scheme = match scheme {
            Scheme::Dark => 0,
            Scheme::Light => 1,
        };
        let mut args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--force-device-scale-factor=2".into(),
            format!("--blink-settings=preferredColorScheme={scheme}"),
            format!("--window-size={},{}", size.0, size.1),
            format!("--user-data-dir={}", profile.display()),
        ];
        if let Scrollbars::Hidden = scrollbars {
            args.push("--hide-scrollbars".into());
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": self.chromium, "args": args }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("chromedriver opens a browser session");
        let page = Page { client };
        page.client.goto(url).await.expect("the page loads");
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this guard created; no memory
        // is involved.
        unsafe { libc::kill(-(self.driver.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.driver.wait();
        for profile in &self.profiles {
            let _ = std::fs::remove_dir_all(profile);
        }
    }
}

/// One person's chat page.
pub struct Page {
    client: Client,
}

/// A chat bubble as the page shows it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Bubble {
    pub text: String,
    /// The sender's name above the group, empty for own messages.
    pub who: String,
    pub own: bool,
    /// The bubble's left and right edges, in CSS pixels.
    pub left: f64,
    pub right: f64,
    /// The message list's content edges (inside its padding).
    pub log_left: f64,
    pub log_right: f64,
}

/// Defined for every script a test runs in the page: `openLog()` is the
/// message list the reader sees (the open room's), `roomLog(name)` a room's
/// own list (shown or not), `roomLink(name)` its entry in the room list.
const PRELUDE: &str = "\
    const openLog = () => document.querySelector('#logs > .messages:not([hidden])'); \
    const roomLog = (name) => [...document.querySelectorAll('#logs > .messages')] \
      .find((l) => l.dataset.room === name); \
    const roomLink = (name) => [...document.querySelectorAll('#rooms .room-link')] \
      .find((a) => a.dataset.room === name);\n";

/// Where to look for bubbles and pills: the list the reader sees, or one
/// room's list whether it is open or not.
#[derive(Clone, Copy, Debug)]
pub enum In<'a> {
    Open,
    Room(&'a str),
}

impl In<'_> {
    /// A JavaScript expression for the message list (see [`PRELUDE`]).
    fn log(self) -> String {
        match self {
            In::Open => "openLog()".into(),
            In::Room(name) => format!("roomLog({})", json!(name)),
        }
    }
}

/// How a room's entry in the room list looks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RoomEntry {
    pub name: String,
    /// "Sender: text" of its last message, or a notice's text.
    pub preview: String,
    /// The unread badge, 0 when it is hidden.
    pub unread: u32,
    /// The room open in the chat pane (highlighted).
    pub active: bool,
}

impl Page {
    /// Runs `script` (a function body, which may use the helpers of
    /// [`PRELUDE`]) in the page and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(&format!("{PRELUDE}{script}"), Vec::new())
            .await
            .unwrap_or_else(|err| panic!("script failed: {err}\n{script}"))
    }

    /// Polls the JavaScript `condition` until it is true; fails after [`WAIT`].
    pub async fn wait_until(&self, condition: &str, what: &str) {
        let script = format!("return !!({condition});");
        let deadline = Instant::now() + WAIT;
        while self.eval(&script).await != json!(true) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the page shows:\n{}",
                self.transcript().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_for_state(&self, state: &str) {
        self.wait_until(
            &format!("document.getElementById('state').dataset.state === {state:?}"),
            &format!("state {state}"),
        )
        .await;
    }

    /// Types `name` into the name field and presses Enter; waits until the
    /// page has reconnected under that name.
    pub async fn set_name(&self, name: &str) {
        self.set_name_raw(name).await;
        self.wait_for_pill(&format!("You are now {name}")).await;
        self.wait_for_state("connected").await;
    }

    /// Types `name` into the name field and presses Enter.
    pub async fn set_name_raw(&self, name: &str) {
        let field = self.find("#name").await;
        field.clear().await.expect("the name field clears");
        field
            .send_keys(&format!("{name}{ENTER}"))
            .await
            .expect("the name is typed");
    }

    /// Remembers `name` as a returning visitor's browser would, and reloads.
    pub async fn come_back_as(&self, name: &str) {
        self.eval(&format!(
            "localStorage.setItem('chatd.name', {}); return true;",
            json!(name)
        ))
        .await;
        self.reload().await;
        self.wait_for_pill(&format!("You joined as {name}")).await;
        self.wait_for_state("connected").await;
    }

    /// Loads the page again, as a person pressing F5 would.
    pub async fn reload(&self) {
        self.client.refresh().await.expect("the page reloads");
    }

    /// Types `text` into the composer and presses Enter.
    pub async fn say(&self, text: &str) {
        self.type_into_composer(&format!("{text}{ENTER}")).await;
    }

    /// Sends raw WebDriver keys to the composer (see [`ENTER`], [`SHIFT`]).
    pub async fn type_into_composer(&self, keys: &str) {
        self.wait_for_state("connected").await;
        self.find("#text")
            .await
            .send_keys(keys)
            .await
            .expect("the message is typed");
    }

    /// Every bubble in the open room, oldest first, with where it sits.
    pub async fn bubbles(&self) -> Vec<Bubble> {
        self.bubbles_in(In::Open).await
    }

    /// Every bubble in `place`, oldest first, with where it sits.
    pub async fn bubbles_in(&self, place: In<'_>) -> Vec<Bubble> {
        let value = self
            .eval(&format!(
                r#"
                const list = {};
                if (!list) return [];
                const style = getComputedStyle(list);
                const outer = list.getBoundingClientRect();
                // A room not open has no layout: its edges are 0.
                const pad = (v) => parseFloat(v) || 0;
                const log = {{
                  left: outer.left + pad(style.paddingLeft),
                  right: outer.right - pad(style.paddingRight),
                }};
                return [...list.querySelectorAll('.bubble')].map((b) => {{
                  const group = b.closest('.group');
                  const rect = b.getBoundingClientRect();
                  const who = group.querySelector('.who');
                  return {{
                    text: b.querySelector('.text').textContent,
                    who: who ? who.textContent : '',
                    own: group.classList.contains('own'),
                    left: rect.left, right: rect.right,
                    log_left: log.left, log_right: log.right,
                  }};
                }});"#,
                place.log()
            ))
            .await;
        serde_json::from_value(value).expect("bubbles as JSON")
    }

    /// Waits for a bubble in the open room whose text is exactly `text`, and
    /// returns it.
    pub async fn wait_for_bubble(&self, text: &str) -> Bubble {
        self.wait_for_bubble_in(In::Open, text).await
    }

    /// Waits for a bubble in `place` whose text is exactly `text`, and
    /// returns it.
    pub async fn wait_for_bubble_in(&self, place: In<'_>, text: &str) -> Bubble {
        let condition = format!(
            "(() => {{ const l = {}; return !!l && [...l.querySelectorAll('.bubble .text')]\
             .some((t) => t.textContent === {}); }})()",
            place.log(),
            json!(text)
        );
        self.wait_until(&condition, &format!("a bubble {text:?} in {place:?}"))
            .await;
        self.bubbles_in(place)
            .await
            .into_iter()
            .find(|b| b.text == text)
            .expect("the bubble is there")
    }

    /// Waits for a system pill in the open room containing `text`.
    pub async fn wait_for_pill(&self, text: &str) {
        self.wait_for_pill_in(In::Open, text).await;
    }

    /// Waits for a system pill in `place` containing `text`.
    pub async fn wait_for_pill_in(&self, place: In<'_>, text: &str) {
        let condition = format!(
            "(() => {{ const l = {}; return !!l && [...l.querySelectorAll('.pill')]\
             .some((p) => p.textContent.includes({})); }})()",
            place.log(),
            json!(text)
        );
        self.wait_until(&condition, &format!("a pill with {text:?} in {place:?}"))
            .await;
    }

    /// The open room's list as text, oldest first: a bubble's text, or a
    /// pill's text in brackets (`[some messages may be missing]`).
    pub async fn rows(&self) -> Vec<String> {
        let value = self
            .eval(
                "const log = openLog(); if (!log) return []; \
                 return [...log.querySelectorAll('.bubble, .pill')].map((r) => \
                   r.classList.contains('pill') ? `[${r.textContent}]` \
                     : r.querySelector('.text').textContent);",
            )
            .await;
        serde_json::from_value(value).expect("rows as JSON")
    }

    /// Scrolls the open room's list to its top, as a reader would.
    pub async fn scroll_to_top(&self) {
        self.eval("openLog().scrollTop = 0; return true;").await;
    }

    /// Scrolls the open room's list to its bottom.
    pub async fn scroll_to_bottom(&self) {
        self.eval("openLog().scrollTop = openLog().scrollHeight; return true;")
            .await;
    }

    /// How many rows anywhere on the page (any room) contain `text`.
    pub async fn rows_anywhere_containing(&self, text: &str) -> u64 {
        let count = self
            .eval(&format!(
                "return [...document.querySelectorAll('#logs > .messages > li')]\
                 .filter((r) => r.textContent.includes({})).length;",
                json!(text)
            ))
            .await;
        count.as_u64().expect("a count")
    }

    /// The room list, top to bottom.
    pub async fn rooms(&self) -> Vec<RoomEntry> {
        let value = self
            .eval(
                "return [...document.querySelectorAll('#rooms .room-link')].map((a) => { \
                   const badge = a.querySelector('.badge'); \
                   return { name: a.dataset.room, \
                     preview: a.querySelector('.room-preview').textContent, \
                     unread: badge.hidden ? 0 : Number(badge.querySelector('.count').textContent), \
                     active: a.classList.contains('active') }; });",
            )
            .await;
        serde_json::from_value(value).expect("rooms as JSON")
    }

    /// The room list's entry for `name`; fails if it is not listed.
    pub async fn room(&self, name: &str) -> RoomEntry {
        self.rooms()
            .await
            .into_iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("{name} is not in the room list"))
    }

    /// Waits until the chat pane shows `name`, joined: its title, and a
    /// composer that can send.
    pub async fn wait_for_open_room(&self, name: &str) {
        self.wait_until(
            &format!(
                "document.getElementById('room-title').textContent === {0} \
                 && openLog() && openLog().dataset.room === {0} \
                 && !document.getElementById('text').disabled",
                json!(name)
            ),
            &format!("room {name} to be open and joined"),
        )
        .await;
    }

    /// Joins (or creates) `name` with the room field, as a reader would, and
    /// waits until it is open and joined.
    pub async fn join_room(&self, name: &str) {
        self.type_into_room_field(&format!("{name}{ENTER}")).await;
        self.wait_for_open_room(name).await;
    }

    /// Types raw WebDriver keys into the "join or create a room" field.
    pub async fn type_into_room_field(&self, keys: &str) {
        let field = self.find("#room-name").await;
        field.clear().await.expect("the room field clears");
        field.send_keys(keys).await.expect("the room name is typed");
    }

    /// Clicks `name` in the room list and waits until it is open.
    pub async fn click_room(&self, name: &str) {
        self.find_and_click(&format!(".room-link[data-room={}]", json!(name)))
            .await;
        self.wait_for_open_room(name).await;
    }

    /// Opens `name` and leaves it with the room bar's Leave button; waits
    /// until it is gone from the room list.
    pub async fn leave_room(&self, name: &str) {
        self.click_room(name).await;
        self.find_and_click("#leave").await;
        self.wait_until(
            &format!("!roomLink({})", json!(name)),
            &format!("{name} to leave the room list"),
        )
        .await;
    }

    /// Sets the URL hash, as following a link to `/#name` would.
    pub async fn set_hash(&self, name: &str) {
        self.eval(&format!("location.hash = {}; return true;", json!(name)))
            .await;
    }

    /// The open room's member list, top to bottom: each member's name, with
    /// " (you)" for this page's own user.
    pub async fn members(&self) -> Vec<String> {
        let value = self
            .eval(
                "return [...document.querySelectorAll('#member-list .member')].map((m) => \
                   m.querySelector('.member-name').textContent + \
                   ([...m.querySelectorAll('.member-note')].some((n) => n.textContent === 'you') \
                     ? ' (you)' : ''));",
            )
            .await;
        serde_json::from_value(value).expect("members as JSON")
    }

    /// Waits until the open room's member list is exactly `names` (sorted
    /// as [`Page::members`] lists them: you first, then by name).
    pub async fn wait_for_members(&self, names: &[&str]) {
        let want = json!(names);
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.members().await;
            if json!(now) == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the member list stayed {now:?}, not {names:?}; the page shows:\n{}",
                self.transcript().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The line under the open room's title that says who is typing; empty
    /// when nobody is (or it is hidden).
    pub async fn typing_line(&self) -> String {
        let value = self
            .eval(
                "const t = document.getElementById('typing'); \
                 return t.hidden ? '' : t.textContent;",
            )
            .await;
        value.as_str().unwrap_or_default().to_string()
    }

    /// Waits until the typing line says `text`.
    pub async fn wait_for_typing(&self, text: &str) {
        self.wait_until(
            &format!(
                "!document.getElementById('typing').hidden \
                 && document.getElementById('typing').textContent === {}",
                json!(text)
            ),
            &format!("the typing line {text:?}"),
        )
        .await;
    }

    /// Who the page says the reader is in token mode ("Signed in as"), and
    /// whether the name field is hidden.
    pub async fn identity(&self) -> (String, bool) {
        let value = self
            .eval(
                "return [document.getElementById('identity').hidden ? '' \
                   : document.getElementById('user-name').textContent, \
                   document.getElementById('name-field').hidden];",
            )
            .await;
        serde_json::from_value(value).expect("identity as JSON")
    }

    /// The address bar, as the reader sees it.
    pub async fn address(&self) -> String {
        let value = self.eval("return location.href;").await;
        value.as_str().expect("an address").to_string()
    }

    /// Waits until the page asks for a token with a reason containing `text`.
    pub async fn wait_for_token_request(&self, text: &str) {
        self.wait_until(
            &format!(
                "!document.getElementById('token-form').hidden \
                 && document.getElementById('token-reason').textContent.includes({})",
                json!(text)
            ),
            &format!("the token field, saying {text:?}"),
        )
        .await;
    }

    /// Pastes `token` into the token field and signs in with it.
    pub async fn paste_token(&self, token: &str) {
        let field = self.find("#token").await;
        field.clear().await.expect("the token field clears");
        field
            .send_keys(&format!("{token}{ENTER}"))
            .await
            .expect("the token is typed");
    }

    /// Everything in the message list, one line per row, for failure messages.
    pub async fn transcript(&self) -> String {
        let value = self
            .client
            .execute(
                "return document.getElementById('state').textContent + '\\n' + \
                 [...document.querySelectorAll('#rooms .room-link')].map((a) => \
                   a.dataset.room + (a.classList.contains('active') ? '*' : '') + ': ' + \
                   a.querySelector('.room-bottom').textContent).join(' | ') + '\\n' + \
                 [...document.querySelectorAll('#logs > .messages')].map((l) => \
                   `[${l.dataset.room || 'no room'}${l.hidden ? '' : ', open'}]\\n` + \
                   [...l.children].map((r) => r.textContent).join('\\n')).join('\\n');",
                Vec::new(),
            )
            .await;
        match value {
            Ok(Value::String(text)) => text,
            other => format!("(no transcript: {other:?})"),
        }
    }

    /// Clicks the element `selector` names.
    pub async fn find_and_click(&self, selector: &str) {
        self.find(selector)
            .await
            .click()
            .await
            .unwrap_or_else(|err| panic!("{selector} cannot be clicked: {err}"));
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        self.client
            .screenshot()
            .await
            .expect("the browser takes a screenshot")
    }

    /// Ends the browser session.
    pub async fn close(self) {
        let _ = self.client.close().await;
    }

    async fn find(&self, selector: &str) -> fantoccini::elements::Element {
        self.client
            .find(Locator::Css(selector))
            .await
            .unwrap_or_else(|err| panic!("no {selector} on the page: {err}"))
    }
}

/// `$VAR` if set, else `name` on the PATH.
fn find_program(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}
