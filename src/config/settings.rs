//! Every setting chatd reads, declared once: its name, default, what it
//! accepts, a one-line meaning, and whether its value is a secret.
//!
//! [`SETTINGS`] is the one list. `Config::from_lookup` reads each value
//! through it (the default, the range and the words of the start-up error
//! line come from here), `chatd config` prints it with the effective values,
//! and the README's settings table is [`markdown_table`]'s output, which a
//! test compares with the README. A new setting is a new row here.

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The environment variable.
    pub name: &'static str,
    /// Its value when unset (or empty).
    pub default: DefaultValue,
    /// What it accepts, checked at start-up.
    pub accepts: Accepts,
    /// What it accepts, in words: the end of the start-up error line
    /// (`chatd: invalid VAR="value": expected …`).
    pub expected: &'static str,
    /// What it does, in one line.
    pub meaning: &'static str,
    /// A secret is never printed.
    pub secret: bool,
}

/// A setting's value when it is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// No value: the feature is off, or another setting decides.
    Unset,
    /// This value.
    Value(&'static str),
    /// The number of CPUs chatd may use.
    Cpus,
}

/// What a setting accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    /// A whole number in `min..=max`.
    Whole { min: u64, max: u64 },
    /// One of these words, in any case.
    OneOf(&'static [&'static str]),
    /// Text, checked where it is used (URLs, origins, paths, keys).
    Text,
}

/// The longest number of seconds a duration setting takes: far beyond any
/// use, and far from overflowing an `Instant`.
pub const MAX_SECONDS: u64 = u64::MAX / 4;

const fn whole(min: u64, max: u64) -> Accepts {
    Accepts::Whole { min, max }
}

const fn seconds(min: u64) -> Accepts {
    Accepts::Whole {
        min,
        max: MAX_SECONDS,
    }
}

const fn setting(
    name: &'static str,
    default: DefaultValue,
    accepts: Accepts,
    expected: &'static str,
    meaning: &'static str,
) -> Setting {
    Setting {
        name,
        default,
        accepts,
        expected,
        meaning,
        secret: false,
    }
}

const fn secret(name: &'static str, expected: &'static str, meaning: &'static str) -> Setting {
    Setting {
        name,
        default: DefaultValue::Unset,
        accepts: Accepts::Text,
        expected,
        meaning,
        secret: true,
    }
}

use DefaultValue::{Cpus, Unset, Value};

const SECONDS_0: &str = "a whole number of seconds, 0 or more";
const SECONDS_1: &str = "a whole number of seconds, 1 or more";

/// Every setting, in the order `chatd config` and the README list them.
pub const SETTINGS: &[Setting] = &[
    setting("API_HOST", Value("127.0.0.1"), Accepts::Text, "an address such as 127.0.0.1 or 0.0.0.0",
        "address to listen on (`0.0.0.0` for every interface)"),
    setting("API_PORT", Value("8000"), whole(0, 65535), "a port number from 0 to 65535 (0 = any free port)",
        "port; `0` picks a free port and logs the address"),
    setting("WORKERS", Cpus, whole(1, 1024), "a whole number of worker threads from 1 to 1024",
        "HTTP worker threads"),
    Setting {
        secret: true,
        ..setting("REDIS_URL", Unset, Accepts::Text, "a URL such as redis://127.0.0.1:6379",
            "`redis://host:port/db`; enables cross-process relay")
    },
    setting("REDIS_HOST", Unset, Accepts::Text, "a host name or address such as redis or 127.0.0.1",
        "the Redis host, instead of `REDIS_URL` (which wins)"),
    setting("REDIS_PORT", Value("6379"), whole(1, 65535), "a port number from 1 to 65535",
        "the Redis port, with `REDIS_HOST`"),
    setting("REDIS_CLUSTER_NODES", Unset, Accepts::Text,
        "a comma list of host:port seed nodes such as 127.0.0.1:7000,127.0.0.1:7001",
        "seed nodes of a Redis Cluster: rooms on sharded pub/sub, spread over the shards (see [Past one Redis](#past-one-redis)); not with `REDIS_URL` or `REDIS_HOST`"),
    setting("REDIS_CHANNEL", Value("chatd:events"), Accepts::Text, "a channel name",
        "the pub/sub channel processes share (and the prefix of their keys)"),
    setting("REDIS_OUTBOX", Value("10000"), whole(1, 10_000_000), "a whole number of events from 1 to 10000000",
        "events held for other processes while Redis is away"),
    setting("LOG_LEVEL", Value("info"),
        Accepts::OneOf(&["error", "warn", "info", "debug", "trace", "off", "warning", "critical"]),
        "one of error, warn, info, debug, trace, off",
        "`error`, `warn`, `info`, `debug`, `trace`; `RUST_LOG` wins when set"),
    setting("LOG_FORMAT", Value("human"), Accepts::OneOf(&["human", "json"]), "human or json",
        "`human`: one line per event as below; `json`: one JSON object per line (time, level, pid, target, message and the message's `key=value` facts as fields)"),
    setting("SHUTDOWN_TIMEOUT", Value("1800"), seconds(0), SECONDS_0,
        "seconds a drain waits for clients before closing them"),
    setting("SHUTDOWN_PROGRESS_INTERVAL", Value("5"), seconds(1), SECONDS_1,
        "seconds between drain progress log lines"),
    setting("SHUTDOWN_CLOSE_SPREAD", Value("5"), seconds(0), SECONDS_0,
        "seconds over which the clients left at the drain deadline are closed with 1001, in batches; `0` = all at once"),
    setting("PERIODIC_NOTIFICATION", Value("10"), seconds(0), SECONDS_0,
        "seconds between periodic notifications; `0` = off"),
    setting("HEARTBEAT_INTERVAL", Value("10"), seconds(1), SECONDS_1,
        "seconds between server pings"),
    setting("CLIENT_TIMEOUT", Value("30"), seconds(1), SECONDS_1,
        "a client that sends no frame (not even a pong) this long is closed with 1008"),
    setting("MAX_MESSAGE_BYTES", Value("4096"), whole(1, 1 << 20), "a size in bytes from 1 to 1048576",
        "longest chat or notification text; longer gets an `error` event (chat) or 413 (`/notify`); at most `MAX_FRAME_BYTES`"),
    setting("MAX_FRAME_BYTES", Value("65536"), whole(64, 16 << 20), "a size in bytes from 64 to 16777216",
        "largest WebSocket message, fragmented or not; larger closes with 1009"),
    setting("COMPRESSION", Value("on"), Accepts::OneOf(&["on", "off"]), "on or off",
        "permessage-deflate (RFC 7692) with clients that offer it, as browsers do: `on` compresses each broadcast once for all its receivers; `off` never agrees to it"),
    setting("RATE_LIMIT_PER_SEC", Value("10"), whole(1, 1_000_000), "a positive whole number",
        "messages (chat or binary) per second per connection, on average"),
    setting("RATE_LIMIT_BURST", Value("20"), whole(1, 1_000_000), "a positive whole number",
        "messages a quiet connection may send at once"),
    setting("MAX_CONNECTIONS", Value("10000"), whole(1, 1_000_000), "a positive whole number",
        "WebSocket connections per process; more get 503"),
    setting("MAX_PENDING_BYTES", Value("1048576"), whole(1024, 1 << 30), "a size in bytes from 1024 to 1073741824",
        "output waiting for a client that does not read; past it the client is closed with 1008"),
    setting("MAX_NAME_CHARS", Value("32"), whole(1, 256), "a whole number of characters from 1 to 256",
        "longest display name"),
    setting("HISTORY_SIZE", Value("100"), whole(1, 10_000), "a whole number of events from 1 to 10000",
        "events (chat and room notices) kept per room"),
    setting("HISTORY_TTL", Value("86400"), seconds(1), SECONDS_1,
        "seconds a room's history outlives its last event"),
    setting("HISTORY_ON_JOIN", Value("50"), whole(0, 10_000), "a whole number of events from 0 to 10000",
        "events a `joined` carries when the client does not resume; at most `HISTORY_SIZE`"),
    setting("HISTORY_MEMORY_BYTES", Value("67108864"), whole(1 << 16, 1 << 40), "a size in bytes from 65536 to 1099511627776",
        "without Redis: memory all rooms' histories may take; past it the least recently active rooms' histories are dropped"),
    setting("MAX_ROOMS_PER_CONNECTION", Value("50"), whole(1, 1000), "a whole number of rooms from 1 to 1000",
        "rooms one connection may be in at once; more in `/ws?room=` is a 400, a `join` past it an `error` (`too_many_rooms`)"),
    setting("ALLOWED_ORIGINS", Unset, Accepts::Text, "`*` or a comma list of origins",
        "browser origins allowed on `/ws`: unset = the request's own host, `*` = any, or a comma list"),
    secret("AUTH_JWT_SECRET", "a secret",
        "when set, `/ws` needs an HS256 JWT signed with this secret (see [Identity and presence](#identity-and-presence))"),
    setting("AUTH_JWT_PUBLIC_KEY_FILE", Unset, Accepts::Text, "a readable PEM file",
        "when set, `/ws` needs a JWT verified with this PEM public key: RS256 for an RSA key, ES256 for a P-256 key; not with `AUTH_JWT_SECRET`"),
    setting("PRESENCE_TTL", Value("10"), seconds(3), "a whole number of seconds, 3 or more",
        "seconds a process's presence record outlives its last refresh: a killed process's users leave the others' presence within this"),
    secret("NOTIFY_TOKEN", "a token",
        "when set, `POST /notify` needs `Authorization: Bearer <token>`; unset, `/notify` is open as in the original"),
    setting("ASSETS_DIR", Unset, Accepts::Text, "a folder holding templates/ and static/",
        "folder holding `templates/` and `static/` (see below)"),
];

/// The declaration of `name`.
///
/// # Panics
/// `name` is not in [`SETTINGS`]: a setting read in code must be declared.
pub fn setting_named(name: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} is read but not declared in SETTINGS"))
}

impl Setting {
    /// The default as the README and `chatd config` show it.
    pub fn default_text(&self) -> String {
        match self.default {
            Unset => "unset".into(),
            Value(value) => value.into(),
            Cpus => "number of CPUs".into(),
        }
    }

    /// `value` as it may be printed: secrets redacted (a URL keeps all but
    /// its password).
    pub fn printable(&self, value: &str) -> String {
        if !self.secret {
            return value.to_string();
        }
        if value.contains("://") {
            return crate::redis::relay::redacted(value);
        }
        "***".into()
    }
}

/// The lines around the README's settings table.
pub const TABLE_BEGIN: &str =
    "<!-- settings table: generated from src/config/settings.rs by `chatd config --markdown` -->";
pub const TABLE_END: &str = "<!-- end of settings table -->";

/// The README's settings table, from [`SETTINGS`].
pub fn markdown_table() -> String {
    let mut table = String::from("| variable | default | accepts | meaning |\n|---|---|---|---|\n");
    for s in SETTINGS {
        let default = match s.default {
            Value(value) => format!("`{value}`"),
            _ => s.default_text(),
        };
        let accepts = match s.accepts {
            Accepts::Whole {
                min,
                max: MAX_SECONDS,
            } => format!("{min} or more"),
            Accepts::Whole { min, max } => format!("{min}–{max}"),
            Accepts::OneOf(words) => words.join(", "),
            Accepts::Text => s.expected.to_string(),
        };
        let secret = if s.secret { " (secret: redacted)" } else { "" };
        table.push_str(&format!(
            "| `{}` | {default} | {accepts} | {}{secret} |\n",
            s.name, s.meaning
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's settings table: the lines between its two markers.
    fn readme_table() -> String {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md is readable");
        let start = readme
            .find(TABLE_BEGIN)
            .expect("the README marks the start of its settings table")
            + TABLE_BEGIN.len();
        let end = readme[start..]
            .find(TABLE_END)
            .expect("the README marks the end of its settings table");
        readme[start..start + end]
            .trim_start_matches('\n')
            .to_string()
    }

    #[test]
    fn the_readme_settings_table_is_the_one_the_code_declares() {
        let expected = markdown_table();
        let found = readme_table();
        if found != expected {
            let differ: Vec<String> = expected
                .lines()
                .zip(found.lines())
                .filter(|(a, b)| a != b)
                .map(|(a, b)| format!("code:   {a}\nREADME: {b}"))
                .collect();
            panic!(
                "the README's settings table is out of date; replace it with \
                 `chatd config --markdown`'s output:\n{}\n({} rows in code, {} in the README)",
                differ.join("\n"),
                expected.lines().count(),
                found.lines().count()
            );
        }
    }

    #[test]
    fn every_default_is_accepted_and_every_name_is_declared_once() {
        for (i, s) in SETTINGS.iter().enumerate() {
            assert!(
                SETTINGS[i + 1..].iter().all(|t| t.name != s.name),
                "{} twice",
                s.name
            );
            match (s.default, s.accepts) {
                (Value(value), Accepts::Whole { min, max }) => {
                    let n: u64 = value.parse().expect(s.name);
                    assert!((min..=max).contains(&n), "{}", s.name);
                }
                (Value(value), Accepts::OneOf(words)) => assert!(words.contains(&value)),
                (Cpus, accepts) => assert!(matches!(accepts, Accepts::Whole { .. })),
                _ => {}
            }
            assert!(!s.meaning.contains('|'), "{}: a | breaks the table", s.name);
        }
    }
}
