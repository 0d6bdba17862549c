//! Building and running the application: the listener, the actors and the
//! HTTP server. `main` and the tests call the same [`Application::build`].

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_http::{error::DispatchError, HttpService};
use actix_service::{fn_service, map_config, ServiceFactory};
use actix_web::dev::{AppConfig, Server};
use actix_web::middleware::{DefaultHeaders, Logger};
use actix_web::rt::net::TcpStream;
use actix_web::{web, App};

use crate::actors::chat_hub::{BridgeLink, ChatHub};
use crate::actors::shutdown_coordinator::{BeginShutdown, DrainPolicy, ShutdownCoordinator};
use crate::actors::ticker::Ticker;
use crate::config::Config;
use crate::http::{self, AppState};
use crate::idempotency::Idempotency;
use crate::metrics::Metrics;
use crate::protocol::ServerId;
use crate::redis::bridge::{BridgeStatus, RedisBridge};
use crate::redis::idempotency::RedisKeys;
use crate::state::{ConnectionLimiter, Lifecycle};

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot render the chat page from {dir}: {source}")]
    Page { dir: String, source: tera::Error },
}

/// A running chatd: its address, and the handles to stop it.
pub struct Application {
    address: SocketAddr,
    server: Server,
    coordinator: Addr<ShutdownCoordinator>,
    /// The start-up log line, written once everything, signals included, is
    /// in place.
    announcement: String,
}

impl Application {
    /// Binds the listener and starts every actor and the HTTP workers. Must be
    /// called inside an actix `System`.
    ///
    /// # Errors
    /// The address cannot be bound, or the page template does not render.
    pub fn build(config: Config) -> Result<Self, StartupError> {
        let assets = assets_dir();
        let page = http::render_page(&assets.join("templates"), &config).map_err(|source| {
            StartupError::Page {
                dir: assets.join("templates").display().to_string(),
                source,
            }
        })?;
        let bind_addr = format!("{}:{}", config.api_host, config.api_port);
        let listener = listen(&bind_addr).map_err(|source| StartupError::Bind {
            addr: bind_addr.clone(),
            source,
        })?;
        let address = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: bind_addr,
            source,
        })?;

        let server_id = ServerId::generate();
        let lifecycle = Arc::new(Lifecycle::new());
        let metrics = Metrics::new();
        let (hub, bridge) = start_hub(&config, &server_id, &metrics);
        let ticker = config
            .periodic_notification
            .map(|every| Ticker::new(hub.clone(), every).start());

        let config = Arc::new(config);
        let state = web::Data::new(AppState {
            connections: ConnectionLimiter::new(config.limits.max_connections),
            config: config.clone(),
            hub: hub.clone(),
            redis: bridge.as_ref().map(|(_, status)| status.clone()),
            server: server_id.clone(),
            lifecycle: lifecycle.clone(),
            verifier: config.auth.as_ref().map(|auth| Arc::new(auth.verifier())),
            page: page.into(),
            static_dir: assets.join("static"),
            metrics,
            idempotency: match &config.redis {
                Some(redis) => Idempotency::in_redis(
                    RedisKeys::new(&redis.target, &redis.channel)
                        .expect("Config::from_lookup checked that the Redis URL parses"),
                ),
                None => Idempotency::in_memory(),
            },
        });
        crate::memory::trim_after_bursts(state.connections.watch());
        let server = Server::build()
            .workers(config.workers)
            .disable_signals()
            .shutdown_timeout(1)
            .listen("chatd", listener, move || {
                http_service(state.clone(), address)
            })
            .map_err(|source| StartupError::Bind {
                addr: address.to_string(),
                source,
            })?
            .run();

        let coordinator = ShutdownCoordinator::new(
            hub,
            ticker.map(Addr::recipient),
            // Stopped last, so a draining process keeps relaying.
            bridge
                .into_iter()
                .map(|(addr, _)| addr.recipient())
                .collect(),
            server.handle(),
            lifecycle,
            DrainPolicy {
                timeout: config.shutdown_timeout,
                progress_interval: config.shutdown_progress_interval,
                close_spread: config.shutdown_close_spread,
                workers: config.workers,
            },
        )
        .start();

        Ok(Self {
            announcement: format!(
                "listening on http://{address} pid={} server={} workers={} redis={}",
                std::process::id(),
                server_id,
                config.workers,
                config
                    .redis
                    .as_ref()
                    .map_or("off".into(), |r| r.target.describe()),
            ),
            address,
            server,
            coordinator,
        })
    }

    /// The address the server listens on (useful with API_PORT=0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where to send [`BeginShutdown`] to start a drain, as SIGTERM would.
    pub fn shutdown_trigger(&self) -> Recipient<BeginShutdown> {
        self.coordinator.clone().recipient()
    }

    /// Hands SIGTERM and SIGINT to the shutdown coordinator from now on.
    ///
    /// # Errors
    /// The handlers cannot be installed.
    pub fn listen_for_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        // Installed before returning, so a signal that comes right after
        // start-up is handled, not fatal.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let coordinator = self.coordinator.clone();
        actix_web::rt::spawn(async move {
            loop {
                let cause = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                coordinator.do_send(BeginShutdown { cause });
            }
        });
        Ok(())
    }

    /// Runs until the server stops: after a drain, or when its handle stops it.
    ///
    /// # Errors
    /// The server failed.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        log::info!("{}", self.announcement);
        self.server.await
    }
}

/// Connections the kernel queues before chatd accepts them. std's
/// `TcpListener::bind` would listen with 128, which overflows (and makes
/// clients retry their SYN a second later) when thousands connect at once.
const LISTEN_BACKLOG: i32 = 4096;

/// Binds `addr` the way actix-web would, but with [`LISTEN_BACKLOG`].
fn listen(addr: &str) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    use std::net::ToSocketAddrs;
    let addr = addr.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")
    })?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// One worker's HTTP service: the actix-web app for requests, and for
/// WebSocket upgrades `http::upgrade`, which takes the socket over from the
/// HTTP dispatcher. The timeouts are actix-web's `HttpServer` defaults.
fn http_service(
    state: web::Data<AppState>,
    address: SocketAddr,
) -> impl ServiceFactory<TcpStream, Config = (), Response = (), Error = DispatchError, InitError = ()>
{
    let app = App::new()
        .app_data(state.clone())
        .wrap(
            DefaultHeaders::new()
                .add(http::NOSNIFF)
                .add(http::NO_REFERRER),
        )
        .wrap(
            Logger::new(r#"%a "%{request}xi" %s %b %Dms"#).custom_request_replace(
                "request",
                |req| {
                    let version = format!("{:?}", req.version());
                    http::request_line(req.method().as_str(), req.uri(), &version)
                },
            ),
        )
        .configure(|cfg| http::configure(cfg, &state));
    HttpService::build()
        .client_request_timeout(Duration::from_secs(5))
        .client_disconnect_timeout(Duration::from_secs(1))
        .local_addr(address)
        .upgrade(fn_service(move |upgrade| {
            http::upgrade(state.clone(), upgrade)
        }))
        .h1(map_config(app, |()| AppConfig::default()))
        .tcp()
}

/// The Redis bridge and the status it publishes for `/status`.
type Bridge = (Addr<RedisBridge>, Arc<BridgeStatus>);

/// The hub and, when Redis is configured, the bridge it publishes to. They
/// know each other's address, so the bridge's context exists before the hub.
fn start_hub(
    config: &Config,
    server_id: &ServerId,
    metrics: &Metrics,
) -> (Addr<ChatHub>, Option<Bridge>) {
    let Some(settings) = &config.redis else {
        return (
            ChatHub::with_presence(
                server_id.clone(),
                config.history.clone(),
                None,
                config.auth.is_some(),
            )
            .with_metrics(metrics.clone())
            .start(),
            None,
        );
    };
    let bridge_ctx = Context::<RedisBridge>::new();
    let bridge = bridge_ctx.address();
    let link = BridgeLink {
        publish: bridge.clone().recipient(),
        store: bridge.clone().recipient(),
        read: bridge.clone().recipient(),
        page: bridge.clone().recipient(),
        rooms: bridge.recipient(),
    };
    let hub = ChatHub::with_presence(
        server_id.clone(),
        config.history.clone(),
        Some(link),
        config.auth.is_some(),
    )
    .with_metrics(metrics.clone())
    .start();
    let status = Arc::new(BridgeStatus::default());
    let bridge = RedisBridge::new(
        settings,
        config.history.clone(),
        config.presence_ttl,
        server_id.clone(),
        hub.clone(),
        status.clone(),
    )
    .expect("Config::from_lookup checked that the Redis URL parses")
    .with_metrics(metrics);
    (hub, Some((bridge_ctx.run(bridge), status)))
}

/// The folder holding `templates/` and `static/`: `ASSETS_DIR` if set, else
/// the working directory if it has them, else the source checkout this binary
/// was built from (so `cargo run` works from anywhere).
fn assets_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ASSETS_DIR") {
        return PathBuf::from(dir);
    }
    let here = Path::new(".");
    if here.join("templates").join("index.html").is_file() {
        return here.to_path_buf();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
