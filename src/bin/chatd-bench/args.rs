//! `--name value` options, read by the mode that needs them. An option no
//! mode read is an error, so a typo never silently runs the default.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

/// The options after the mode name.
#[derive(Debug, Default)]
pub struct Options {
    values: BTreeMap<String, String>,
    flags: BTreeSet<String>,
    read: RefCell<BTreeSet<String>>,
}

/// Options that take no value.
const FLAGS: &[&str] = &["json", "cross", "cluster", "kill", "compress"];

impl Options {
    /// # Errors
    /// An argument is not `--name value`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut options = Self::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| format!("expected an option like --clients, got {arg:?}"))?;
            if FLAGS.contains(&name) {
                options.flags.insert(name.to_string());
                continue;
            }
            let value = args
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            options.values.insert(name.to_string(), value);
        }
        Ok(options)
    }

    /// The value of `--name`, or `default`.
    ///
    /// # Errors
    /// The value does not parse as a `T`.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        self.read.borrow_mut().insert(name.to_string());
        match self.values.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|_| format!("--{name} {raw:?} is not a valid value")),
        }
    }

    /// The value of `--name` if given.
    ///
    /// # Errors
    /// The value does not parse as a `T`.
    pub fn optional<T: FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        self.read.borrow_mut().insert(name.to_string());
        self.values
            .get(name)
            .map(|raw| {
                raw.parse()
                    .map_err(|_| format!("--{name} {raw:?} is not a valid value"))
            })
            .transpose()
    }

    pub fn flag(&self, name: &str) -> bool {
        self.flags.contains(name)
    }

    /// # Errors
    /// Names the options no mode asked for.
    pub fn check_all_read(&self) -> Result<(), String> {
        let read = self.read.borrow();
        let unknown: Vec<_> = self
            .values
            .keys()
            .filter(|name| !read.contains(*name))
            .map(|name| format!("--{name}"))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "unknown option(s) for this mode: {}",
                unknown.join(" ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn options_parse_with_defaults_and_refuse_typos() {
        let options = parse(&["--clients", "20", "--json", "--ratee", "5"]).unwrap();
        assert_eq!(options.get("clients", 1000usize), Ok(20));
        assert_eq!(options.get("senders", 10usize), Ok(10));
        assert!(options.flag("json"));
        assert!(options.check_all_read().unwrap_err().contains("--ratee"));
        let bad = parse(&["--rate", "fast"]).unwrap();
        assert!(bad
            .get("rate", 1.0)
            .unwrap_err()
            .contains("--rate \"fast\""));
        assert!(parse(&["clients"]).is_err());
        assert!(parse(&["--clients"]).is_err());
    }
}
