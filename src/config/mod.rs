//! Settings read once at start-up from the environment (and `.env`).
//!
//! Every setting is declared once, in [`settings::SETTINGS`]: its default,
//! what it accepts and the words of its error line come from there. An empty
//! environment runs one process on 127.0.0.1:8000 with no Redis. A value that
//! does not parse stops start-up with one [`ConfigError`] line naming the
//! variable, the value and what was expected; after that every value is
//! trusted and carries its unit.

pub mod report;
pub mod settings;

use std::time::Duration;

use settings::{setting_named, Accepts};

/// A setting whose value could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}={value:?}: expected {expected}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// Where the Redis bridge connects, when cross-process relay is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// One Redis server, or the seed nodes of a Redis Cluster.
    pub target: RedisTarget,
    /// The pub/sub channel every chatd process of one chat shares.
    pub channel: String,
    /// Events held for other processes while Redis is away; the oldest go first.
    pub outbox_capacity: usize,
}

/// One Redis, or a Redis Cluster (`REDIS_CLUSTER_NODES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// A `redis://` URL, from `REDIS_URL` or built from `REDIS_HOST`/`REDIS_PORT`.
    Server(String),
    /// Seed nodes as `redis://host:port` URLs; the client learns the rest
    /// of the cluster from them.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// Where it is, for logs and `/status`: the URL without its password,
    /// or `cluster:` and the seed nodes.
    pub fn describe(&self) -> String {
        match self {
            RedisTarget::Server(url) => crate::redis::relay::redacted(url),
            RedisTarget::Cluster(nodes) => {
                let nodes: Vec<&str> = nodes
                    .iter()
                    .map(|n| n.trim_start_matches("redis://"))
                    .collect();
                format!("cluster:{}", nodes.join(","))
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster(_))
    }
}

/// Per-connection limits, shared by every session of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest chat text in bytes; longer text gets an `error` event.
    pub max_message_bytes: usize,
    /// Largest WebSocket message (one frame, or a fragmented message in total);
    /// larger closes the connection with 1009.
    pub max_frame_bytes: usize,
    /// Chat messages a client may send per second, on average.
    pub rate_per_second: u32,
    /// Chat messages a client may send at once after being quiet.
    pub rate_burst: u32,
    /// WebSocket connections this process accepts at once; more get 503.
    pub max_connections: usize,
    /// Output waiting for a client that does not read; past it the client is
    /// closed with 1008.
    pub max_pending_bytes: usize,
    /// Longest display name, in characters.
    pub max_name_chars: usize,
    /// Rooms one connection may be in at once.
    pub max_rooms_per_connection: usize,
    /// How often the server pings each client.
    pub heartbeat_interval: Duration,
    /// A client that sent no frame (not even a pong) for this long is closed.
    pub client_timeout: Duration,
}

/// How much of each room's conversation is kept, for `joined.history` and
/// recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistorySettings {
    /// Events kept per room (chat messages and room notices).
    pub size: usize,
    /// A room's history is dropped this long after its last event.
    pub ttl: Duration,
    /// Events a plain `join` (or `welcome`) carries.
    pub on_join: usize,
    /// Without Redis: the most memory all rooms' histories may take; past it
    /// the least recently active rooms' histories go first.
    pub memory_bytes: usize,
}

/// How `/ws` tokens are checked, when they are required.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthSetting {
    /// `AUTH_JWT_SECRET`: HS256.
    Secret(String),
    /// `AUTH_JWT_PUBLIC_KEY_FILE`: RS256 or ES256, as the key's type says.
    PublicKey { path: String, pem: Vec<u8> },
}

impl std::fmt::Debug for AuthSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthSetting::Secret(_) => f.write_str("Secret(***)"),
            AuthSetting::PublicKey { path, .. } => write!(f, "PublicKey({path})"),
        }
    }
}

impl AuthSetting {
    /// The verifier for this setting; the start-up check already built one.
    pub fn verifier(&self) -> crate::auth::Verifier {
        match self {
            AuthSetting::Secret(secret) => crate::auth::Verifier::hs256(secret.as_bytes()),
            AuthSetting::PublicKey { pem, .. } => crate::auth::Verifier::from_public_pem(pem),
        }
        .expect("Config::from_lookup checked the key")
    }
}

/// Which browser origins may open a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `ALLOWED_ORIGINS` unset: a browser's `Origin` must name the host it asked.
    SameHost,
    /// `ALLOWED_ORIGINS=*`.
    Any,
    /// An explicit comma-separated list such as `https://chat.example.com`.
    List(Vec<String>),
}

/// Everything chatd reads from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub api_host: String,
    /// 0 binds any free port; the bound address is logged.
    pub api_port: u16,
    pub workers: usize,
    pub redis: Option<RedisSettings>,
    /// An env_logger filter such as `info` or `chatd=debug`; `RUST_LOG` wins.
    pub log_level: String,
    /// How log lines are written.
    pub log_format: crate::telemetry::LogFormat,
    /// Whether permessage-deflate is agreed with clients that offer it.
    pub compression: bool,
    /// How long a drain waits for clients to leave before closing them.
    pub shutdown_timeout: Duration,
    /// How often a drain logs its progress.
    pub shutdown_progress_interval: Duration,
    /// Over how long the clients left at the drain deadline are closed, in
    /// batches; zero closes them all at once.
    pub shutdown_close_spread: Duration,
    /// How often every client gets a periodic notification; `None` is off.
    pub periodic_notification: Option<Duration>,
    pub limits: Limits,
    pub history: HistorySettings,
    pub allowed_origins: AllowedOrigins,
    /// When set, `POST /notify` needs `Authorization: Bearer <token>`.
    pub notify_token: Option<String>,
    /// When set, `/ws` needs a signed token.
    pub auth: Option<AuthSetting>,
    /// How long a killed process's users stay present to the others.
    pub presence_ttl: Duration,
}

impl Config {
    /// Reads the process environment. Call `dotenvy::dotenv()` first to
    /// include a `.env` file.
    ///
    /// # Errors
    /// The first setting whose value cannot be used.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads settings through `lookup`, so tests need not touch the process
    /// environment. Empty values count as unset.
    ///
    /// # Errors
    /// The first setting whose value cannot be used.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&|key| lookup(key).filter(|v| !v.trim().is_empty()));
        let limits = Limits {
            max_message_bytes: env.number("MAX_MESSAGE_BYTES")?,
            max_frame_bytes: env.number("MAX_FRAME_BYTES")?,
            rate_per_second: env.number("RATE_LIMIT_PER_SEC")?,
            rate_burst: env.number("RATE_LIMIT_BURST")?,
            max_connections: env.number("MAX_CONNECTIONS")?,
            max_pending_bytes: env.number("MAX_PENDING_BYTES")?,
            max_name_chars: env.number("MAX_NAME_CHARS")?,
            max_rooms_per_connection: env.number("MAX_ROOMS_PER_CONNECTION")?,
            heartbeat_interval: env.seconds("HEARTBEAT_INTERVAL")?,
            client_timeout: env.seconds("CLIENT_TIMEOUT")?,
        };
        if limits.max_message_bytes > limits.max_frame_bytes {
            return Err(ConfigError {
                var: "MAX_MESSAGE_BYTES",
                value: limits.max_message_bytes.to_string(),
                expected: "a size no larger than MAX_FRAME_BYTES",
            });
        }
        let history = HistorySettings {
            size: env.number("HISTORY_SIZE")?,
            ttl: env.seconds("HISTORY_TTL")?,
            on_join: env.number("HISTORY_ON_JOIN")?,
            memory_bytes: env.number("HISTORY_MEMORY_BYTES")?,
        };
        if history.on_join > history.size {
            return Err(ConfigError {
                var: "HISTORY_ON_JOIN",
                value: history.on_join.to_string(),
                expected: "a number of events no larger than HISTORY_SIZE",
            });
        }
        let periodic = env.seconds("PERIODIC_NOTIFICATION")?;
        Ok(Config {
            api_host: env.text_or_default("API_HOST"),
            api_port: env.number("API_PORT")?,
            workers: env.number_or("WORKERS", default_workers() as u64)?,
            redis: redis_settings(&env)?,
            log_level: log_level(&env)?,
            log_format: match env.choice("LOG_FORMAT")?.as_str() {
                "json" => crate::telemetry::LogFormat::Json,
                _ => crate::telemetry::LogFormat::Human,
            },
            compression: env.choice("COMPRESSION")? == "on",
            shutdown_timeout: env.seconds("SHUTDOWN_TIMEOUT")?,
            shutdown_progress_interval: env.seconds("SHUTDOWN_PROGRESS_INTERVAL")?,
            shutdown_close_spread: env.seconds("SHUTDOWN_CLOSE_SPREAD")?,
            periodic_notification: (!periodic.is_zero()).then_some(periodic),
            limits,
            history,
            allowed_origins: allowed_origins(&env),
            notify_token: env.text("NOTIFY_TOKEN"),
            auth: auth_setting(&env)?,
            presence_ttl: env.seconds("PRESENCE_TTL")?,
        })
    }

    /// The defaults, as an empty environment gives them.
    pub fn default_for_tests() -> Self {
        Self::from_lookup(|_| None).expect("the defaults are valid")
    }
}

/// WORKERS when unset: the CPUs chatd may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn redis_settings(env: &Env) -> Result<Option<RedisSettings>, ConfigError> {
    let single = match (env.text("REDIS_URL"), env.text("REDIS_HOST")) {
        (Some(url), _) => Some(("REDIS_URL", url)),
        (None, Some(host)) => {
            let port: u16 = env.number("REDIS_PORT")?;
            Some(("REDIS_HOST", format!("redis://{host}:{port}")))
        }
        (None, None) => None,
    };
    let target = match (env.text("REDIS_CLUSTER_NODES"), single) {
        (None, None) => return Ok(None),
        (Some(nodes), Some((var, _))) => {
            return Err(ConfigError {
                var: "REDIS_CLUSTER_NODES",
                value: nodes,
                expected: if var == "REDIS_URL" {
                    "REDIS_CLUSTER_NODES or REDIS_URL, not both"
                } else {
                    "REDIS_CLUSTER_NODES or REDIS_HOST, not both"
                },
            })
        }
        (Some(nodes), None) => RedisTarget::Cluster(cluster_nodes(env, &nodes)?),
        (None, Some((var, url))) => {
            // Parsing only; nothing connects until the bridge starts.
            let parses = (url.starts_with("redis://") || url.starts_with("rediss://"))
                && redis::Client::open(url.as_str()).is_ok();
            if !parses {
                return Err(ConfigError {
                    var,
                    value: crate::redis::relay::redacted(&env.text(var).unwrap_or_default()),
                    expected: setting_named(var).expected,
                });
            }
            RedisTarget::Server(url)
        }
    };
    let channel = env.text_or_default("REDIS_CHANNEL");
    // In a cluster the room channel is the hash tag of the room's keys
    // (`{<channel>:room:<R>}:history`): a brace in it would change the tag.
    if target.is_cluster() && channel.contains(['{', '}']) {
        return Err(ConfigError {
            var: "REDIS_CHANNEL",
            value: channel,
            expected: "a channel name without { or } with REDIS_CLUSTER_NODES (braces are Redis Cluster hash tags)",
        });
    }
    Ok(Some(RedisSettings {
        target,
        channel,
        outbox_capacity: env.number("REDIS_OUTBOX")?,
    }))
}

/// `REDIS_CLUSTER_NODES`: a comma list of `host:port` (or `redis://host:port`).
fn cluster_nodes(env: &Env, list: &str) -> Result<Vec<String>, ConfigError> {
    let nodes: Option<Vec<String>> = list
        .split(',')
        .map(str::trim)
        .filter(|node| !node.is_empty())
        .map(|node| {
            let bare = node.strip_prefix("redis://").unwrap_or(node);
            let (host, port) = bare.rsplit_once(':')?;
            let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
            let url = format!("redis://{host}:{port}");
            let ok = !host.is_empty()
                && !host.contains(['/', '@', ' '])
                && redis::Client::open(url.as_str()).is_ok();
            ok.then_some(url)
        })
        .collect();
    match nodes {
        Some(nodes) if !nodes.is_empty() => Ok(nodes),
        _ => Err(env.invalid("REDIS_CLUSTER_NODES")),
    }
}

fn log_level(env: &Env) -> Result<String, ConfigError> {
    let level = env.choice("LOG_LEVEL")?;
    Ok(match level.as_str() {
        "warning" => "warn".into(),
        "critical" => "error".into(),
        _ => level,
    })
}

fn auth_setting(env: &Env) -> Result<Option<AuthSetting>, ConfigError> {
    match (
        env.text("AUTH_JWT_SECRET"),
        env.text("AUTH_JWT_PUBLIC_KEY_FILE"),
    ) {
        (None, None) => Ok(None),
        (Some(_), Some(path)) => Err(ConfigError {
            var: "AUTH_JWT_PUBLIC_KEY_FILE",
            value: path,
            expected: "AUTH_JWT_SECRET or AUTH_JWT_PUBLIC_KEY_FILE, not both",
        }),
        (Some(secret), None) => Ok(Some(AuthSetting::Secret(secret))),
        (None, Some(path)) => {
            let bad = |expected| ConfigError {
                var: "AUTH_JWT_PUBLIC_KEY_FILE",
                value: path.clone(),
                expected,
            };
            let pem = std::fs::read(&path).map_err(|_| bad("a readable PEM file"))?;
            crate::auth::Verifier::from_public_pem(&pem).map_err(bad)?;
            Ok(Some(AuthSetting::PublicKey { path, pem }))
        }
    }
}

fn allowed_origins(env: &Env) -> AllowedOrigins {
    match env.text("ALLOWED_ORIGINS") {
        None => AllowedOrigins::SameHost,
        Some(list) if list.trim() == "*" => AllowedOrigins::Any,
        Some(list) => AllowedOrigins::List(
            list.split(',')
                .map(|origin| origin.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|origin| !origin.is_empty())
                .collect(),
        ),
    }
}

/// The lookup, with the parsing helpers that read a setting as its
/// declaration says and turn a bad value into a [`ConfigError`].
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn text(&self, var: &str) -> Option<String> {
        (self.0)(var).map(|v| v.trim().to_string())
    }

    /// The value, or the declared default.
    fn text_or_default(&self, var: &'static str) -> String {
        self.text(var)
            .unwrap_or_else(|| match setting_named(var).default {
                settings::DefaultValue::Value(value) => value.to_string(),
                other => panic!("{var} has no default text: {other:?}"),
            })
    }

    fn invalid(&self, var: &'static str) -> ConfigError {
        ConfigError {
            var,
            value: (self.0)(var).unwrap_or_default(),
            expected: setting_named(var).expected,
        }
    }

    /// A whole number within the declared range, or the declared default.
    fn number<T: TryFrom<u64>>(&self, var: &'static str) -> Result<T, ConfigError> {
        let default = match setting_named(var).default {
            settings::DefaultValue::Value(value) => value.parse::<u64>().ok(),
            _ => None,
        };
        let default = default.unwrap_or_else(|| panic!("{var} has no numeric default"));
        self.number_or(var, default)
    }

    /// A whole number within the declared range, or `default`.
    fn number_or<T: TryFrom<u64>>(
        &self,
        var: &'static str,
        default: u64,
    ) -> Result<T, ConfigError> {
        let Accepts::Whole { min, max } = setting_named(var).accepts else {
            panic!("{var} is not declared as a whole number");
        };
        let value = match self.text(var) {
            None => default,
            Some(raw) => match raw.parse::<u64>() {
                Ok(value) if (min..=max).contains(&value) => value,
                _ => return Err(self.invalid(var)),
            },
        };
        T::try_from(value).map_err(|_| self.invalid(var))
    }

    fn seconds(&self, var: &'static str) -> Result<Duration, ConfigError> {
        self.number::<u64>(var).map(Duration::from_secs)
    }

    /// One of the declared words (lower-cased), or the declared default.
    fn choice(&self, var: &'static str) -> Result<String, ConfigError> {
        let Accepts::OneOf(words) = setting_named(var).accepts else {
            panic!("{var} is not declared as a choice");
        };
        let value = self.text_or_default(var).to_ascii_lowercase();
        if words.contains(&value.as_str()) {
            Ok(value)
        } else {
            Err(self.invalid(var))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn an_empty_environment_gives_the_documented_defaults() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.api_host, "127.0.0.1");
        assert_eq!(config.api_port, 8000);
        assert_eq!(config.redis, None);
        assert_eq!(config.shutdown_timeout, Duration::from_secs(1800));
        assert_eq!(config.periodic_notification, Some(Duration::from_secs(10)));
        assert_eq!(config.limits.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(config.limits.client_timeout, Duration::from_secs(30));
        assert_eq!(config.allowed_origins, AllowedOrigins::SameHost);
        assert_eq!(config.log_level, "info");
    }

    #[test]
    fn bad_values_name_the_variable_the_value_and_the_expectation() {
        let cases = [
            ("API_PORT", "abc"),
            ("API_PORT", "70000"),
            ("PERIODIC_NOTIFICATION", "-1"),
            ("SHUTDOWN_TIMEOUT", "soon"),
            ("WORKERS", "0"),
            ("LOG_LEVEL", "loud"),
            ("REDIS_URL", "localhost:6379"),
            ("REDIS_URL", "redis://host:notaport"),
            ("REDIS_HOST", "bad host/name"),
            ("HEARTBEAT_INTERVAL", "0"),
        ];
        for (var, value) in cases {
            let err = parse(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var, "{var}={value}");
            let line = err.to_string();
            assert!(line.contains(var) && line.contains(value), "{line}");
            assert!(line.contains("expected"), "{line}");
        }
    }

    #[test]
    fn periodic_notification_zero_turns_the_ticker_off() {
        let config = parse(&[("PERIODIC_NOTIFICATION", "0")]).unwrap();
        assert_eq!(config.periodic_notification, None);
    }

    #[test]
    fn redis_host_and_port_build_a_url_and_redis_url_wins() {
        let config = parse(&[("REDIS_HOST", "redis"), ("REDIS_PORT", "6380")]).unwrap();
        assert_eq!(
            config.redis.unwrap().target,
            RedisTarget::Server("redis://redis:6380".into())
        );
        let config = parse(&[("REDIS_URL", "redis://a:1/0"), ("REDIS_HOST", "b")]).unwrap();
        assert_eq!(
            config.redis.unwrap().target,
            RedisTarget::Server("redis://a:1/0".into())
        );
    }

    #[test]
    fn cluster_nodes_become_seed_urls_and_exclude_a_single_redis() {
        let config = parse(&[("REDIS_CLUSTER_NODES", "127.0.0.1:7000, redis://h:7001,")]).unwrap();
        let redis = config.redis.unwrap();
        assert_eq!(
            redis.target,
            RedisTarget::Cluster(vec![
                "redis://127.0.0.1:7000".into(),
                "redis://h:7001".into()
            ])
        );
        assert_eq!(redis.target.describe(), "cluster:127.0.0.1:7000,h:7001");
        let both = parse(&[
            ("REDIS_CLUSTER_NODES", "h:7000"),
            ("REDIS_URL", "redis://h:6379"),
        ]);
        let err = both.unwrap_err();
        assert_eq!(err.var, "REDIS_CLUSTER_NODES");
        assert!(err.to_string().contains("REDIS_URL"), "{err}");
        let with_host = parse(&[("REDIS_CLUSTER_NODES", "h:7000"), ("REDIS_HOST", "h")]);
        assert!(with_host.unwrap_err().to_string().contains("REDIS_HOST"));
        for bad in [
            "h", "h:0", "h:99999", ":7000", ",", "h:70x0", "a b:7000", "u@h:7000",
        ] {
            let err = parse(&[("REDIS_CLUSTER_NODES", bad)]).unwrap_err();
            assert_eq!(err.var, "REDIS_CLUSTER_NODES", "{bad:?}");
        }
        let braces = parse(&[("REDIS_CLUSTER_NODES", "h:7000"), ("REDIS_CHANNEL", "a{b}")]);
        assert_eq!(braces.unwrap_err().var, "REDIS_CHANNEL");
        assert!(parse(&[("REDIS_URL", "redis://h:1"), ("REDIS_CHANNEL", "a{b}")]).is_ok());
    }

    #[test]
    fn allowed_origins_accepts_a_star_or_a_list() {
        let any = parse(&[("ALLOWED_ORIGINS", "*")]).unwrap();
        assert_eq!(any.allowed_origins, AllowedOrigins::Any);
        let list = parse(&[("ALLOWED_ORIGINS", "https://A.example/, http://b.example")]).unwrap();
        assert_eq!(
            list.allowed_origins,
            AllowedOrigins::List(vec!["https://a.example".into(), "http://b.example".into()])
        );
    }

    #[test]
    fn log_level_accepts_python_style_names() {
        assert_eq!(
            parse(&[("LOG_LEVEL", "WARNING")]).unwrap().log_level,
            "warn"
        );
        assert_eq!(parse(&[("LOG_LEVEL", "DEBUG")]).unwrap().log_level, "debug");
    }
}
