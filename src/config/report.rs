//! `chatd config`: every setting's effective value and where it came from,
//! secrets redacted, one `NAME=value  # source` line each, in the order of
//! [`SETTINGS`].

use std::collections::HashSet;

use super::settings::{DefaultValue, SETTINGS};

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    DotEnv,
    Environment,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::DotEnv => ".env",
            Source::Environment => "environment",
        }
    }
}

/// The settings given in the process environment, read before `.env` is
/// loaded: dotenvy never overrides them, so what is set afterwards and not
/// before came from `.env`.
pub fn given_in_environment() -> HashSet<&'static str> {
    SETTINGS
        .iter()
        .filter(|s| std::env::var(s.name).is_ok_and(|v| !v.trim().is_empty()))
        .map(|s| s.name)
        .collect()
}

/// The report, with values read through `lookup` (after `.env` was loaded)
/// and `environment` the names [`given_in_environment`] found.
pub fn render(
    lookup: impl Fn(&str) -> Option<String>,
    environment: &HashSet<&'static str>,
) -> String {
    let mut out = String::new();
    for setting in SETTINGS {
        let given = lookup(setting.name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        let (value, source) = match given {
            Some(value) if environment.contains(setting.name) => (
                setting.printable(&value),
                Source::Environment.as_str().into(),
            ),
            Some(value) => (setting.printable(&value), Source::DotEnv.as_str().into()),
            None => match setting.default {
                DefaultValue::Value(value) => (value.to_string(), "default".to_string()),
                DefaultValue::Unset => (String::new(), "default (unset)".to_string()),
                DefaultValue::Cpus => (
                    super::default_workers().to_string(),
                    "default (number of CPUs)".to_string(),
                ),
            },
        };
        let line = format!("{}={value}", setting.name);
        out.push_str(&format!("{line:<44} # {source}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_says_where_it_came_from_and_secrets_are_redacted() {
        let values = [
            ("API_PORT", "9000"),
            ("NOTIFY_TOKEN", "s3cret"),
            ("REDIS_URL", "redis://:pw@redis:6379/0"),
            ("HISTORY_SIZE", "20"),
        ];
        let environment: HashSet<&str> = ["API_PORT", "NOTIFY_TOKEN"].into();
        let report = render(
            |key| {
                values
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
            },
            &environment,
        );
        let line = |name: &str| {
            report
                .lines()
                .find(|l| l.starts_with(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {report}"))
                .to_string()
        };
        assert!(line("API_PORT").ends_with("# environment"), "{report}");
        assert!(line("HISTORY_SIZE").ends_with("# .env"), "{report}");
        assert!(line("API_HOST").starts_with("API_HOST=127.0.0.1 "));
        assert!(line("API_HOST").ends_with("# default"));
        assert!(line("NOTIFY_TOKEN").starts_with("NOTIFY_TOKEN=*** "));
        assert!(
            !report.contains("s3cret") && !report.contains(":pw@"),
            "{report}"
        );
        assert_eq!(report.lines().count(), SETTINGS.len());
    }
}
