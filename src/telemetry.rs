//! Log lines: one event per line, for people or for machines.
//!
//! - `human` (the default): time, level, pid, module, message:
//!   `2026-11-24T02:03:56.752Z INFO  pid=8487 chatd::actors::shutdown_coordinator: draining pid=8487 connections=12 seconds_left=1740`
//! - `json` (`LOG_FORMAT=json`), for log shippers: one object per line with
//!   `time`, `level`, `pid`, `target` and `message`, and each `key=value`
//!   fact of the message as a field of its own (a number as a number), so
//!   `connections` can be queried without parsing the message:
//!   `{"time":"…","level":"INFO","pid":8487,"target":"chatd::actors::shutdown_coordinator","message":"draining pid=8487 connections=12 seconds_left=1740","connections":12,"seconds_left":1740}`
//!
//! Whatever the format, no client can make a line above `info` at will:
//! chatd logs client mistakes at `debug` (or a rate-limited `info`), and
//! the warnings and errors actix-http's dispatcher logs for a malformed
//! request are demoted to `debug` on their way to the log.
//!
//! The facts are read back from the message rather than passed separately
//! so that every `log` call site stays as it is and both formats say the
//! same; the price is that a fact's value must be a word or a quoted string
//! (which is how chatd writes them).

use std::io::Write;

use serde_json::{Map, Value};

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// The fields every JSON line has; a fact with one of these names is left
/// in the message only.
const RESERVED: [&str; 5] = ["time", "level", "pid", "target", "message"];

/// Starts logging at `level` (LOG_LEVEL) in `format`; RUST_LOG, when set,
/// wins over `level`.
pub fn init(level: &str, format: LogFormat) {
    let pid = std::process::id();
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    match format {
        LogFormat::Human => builder.format(move |buf, record| {
            writeln!(
                buf,
                "{} {:<5} pid={pid} {}: {}",
                buf.timestamp_millis(),
                record.level(),
                record.target(),
                record.args()
            )
        }),
        LogFormat::Json => builder.format(move |buf, record| {
            let line = json_line(
                &buf.timestamp_millis().to_string(),
                record.level().as_str(),
                pid,
                record.target(),
                &record.args().to_string(),
            );
            writeln!(buf, "{line}")
        }),
    };
    let logger = builder.build();
    let max_level = logger.filter();
    if log::set_boxed_logger(Box::new(Demoting(logger))).is_ok() {
        log::set_max_level(max_level);
    }
}

/// Log targets whose warnings and errors any client can cause at will: a
/// malformed request makes actix-http's dispatcher log `stream error` at
/// ERROR. Their warnings and errors are logged at debug, so no client can
/// fill the log or page anyone.
const CLIENT_CAUSED: [&str; 1] = ["actix_http::h1::dispatcher"];

/// env_logger's logger, with the warnings and errors of [`CLIENT_CAUSED`]
/// targets demoted to debug.
struct Demoting(env_logger::Logger);

impl Demoting {
    fn demotes(metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Warn
            && CLIENT_CAUSED
                .iter()
                .any(|target| metadata.target().starts_with(target))
    }
}

impl log::Log for Demoting {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        if Self::demotes(metadata) {
            let demoted = log::Metadata::builder()
                .level(log::Level::Debug)
                .target(metadata.target())
                .build();
            return self.0.enabled(&demoted);
        }
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if !Self::demotes(record.metadata()) {
            return self.0.log(record);
        }
        let demoted = log::Record::builder()
            .level(log::Level::Debug)
            .target(record.target())
            .args(*record.args())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .build();
        if self.0.enabled(demoted.metadata()) {
            self.0.log(&demoted);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// One JSON log line (without its newline).
pub fn json_line(time: &str, level: &str, pid: u32, target: &str, message: &str) -> String {
    let mut object = Map::new();
    object.insert("time".into(), time.into());
    object.insert("level".into(), level.into());
    object.insert("pid".into(), pid.into());
    object.insert("target".into(), target.into());
    object.insert("message".into(), message.into());
    for (key, value) in facts(message) {
        if !RESERVED.contains(&key) && !object.contains_key(key) {
            object.insert(key.to_string(), value);
        }
    }
    Value::Object(object).to_string()
}

/// The `key=value` facts of a message: a key is a lower-case word
/// (`a-z 0-9 _`), a value runs to the next space, or is a quoted string
/// (as `{:?}` writes it). A whole number or `true`/`false` becomes one.
pub fn facts(message: &str) -> Vec<(&str, Value)> {
    let mut found = Vec::new();
    let mut rest = message;
    while let Some(eq) = rest.find('=') {
        let before = &rest[..eq];
        let key_start = before
            .rfind(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(0, |i| i + 1);
        let key = &before[key_start..];
        let starts_word = key_start == 0 || before[..key_start].ends_with([' ', '(', ',', ';']);
        let after = &rest[eq + 1..];
        let (value, used) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted_end(quoted) {
                Some(end) => {
                    let raw = &after[..end + 2];
                    let text: Value = serde_json::from_str(raw)
                        .unwrap_or_else(|_| Value::String(quoted[..end].to_string()));
                    (text, end + 2)
                }
                None => (Value::String(quoted.to_string()), after.len()),
            }
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            let word = after[..end].trim_end_matches([',', ';', ')']);
            (word_value(word), end)
        };
        if !key.is_empty() && starts_word && !key.starts_with(|c: char| c.is_ascii_digit()) {
            found.push((key, value));
        }
        rest = &after[used..];
    }
    found
}

/// Where the closing quote of a string that starts after its opening quote is.
fn quoted_end(quoted: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in quoted.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

fn word_value(word: &str) -> Value {
    if let Ok(n) = word.parse::<i64>() {
        return n.into();
    }
    match word {
        "true" => true.into(),
        "false" => false.into(),
        _ => word.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn facts_are_read_from_key_value_words() {
        let cases = [
            (
                "numbers",
                "draining pid=12 connections=3 seconds_left=1740",
                json!({"pid": 12, "connections": 3, "seconds_left": 1740}),
            ),
            (
                "a quoted string with spaces and an escaped quote",
                r#"drain finished reason="all \"clients\" left"; exiting"#,
                json!({"reason": "all \"clients\" left"}),
            ),
            (
                "a URL with an = inside is one value",
                "listening on http://127.0.0.1:80 redis=redis://h:1/0?a=b workers=2",
                json!({"redis": "redis://h:1/0?a=b", "workers": 2}),
            ),
            ("no facts", "hanging up on a client", json!({})),
            ("not a word before =", "a == b", json!({})),
        ];
        for (description, message, expected) in cases {
            let got: Map<String, Value> = facts(message)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            assert_eq!(Value::Object(got), expected, "{description}: {message}");
        }
    }

    #[test]
    fn a_json_line_has_the_fixed_fields_and_the_facts() {
        let line = json_line(
            "2026-12-01T10:00:00.000Z",
            "INFO",
            7,
            "chatd::x",
            "closing pid=7 connections=2 message=hi",
        );
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            value,
            json!({
                "time": "2026-12-01T10:00:00.000Z", "level": "INFO", "pid": 7,
                "target": "chatd::x", "message": "closing pid=7 connections=2 message=hi",
                "connections": 2,
            })
        );
    }
}
