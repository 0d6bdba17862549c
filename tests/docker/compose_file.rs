//! What the container runs do not wait long enough to show: the grace period
//! that lets a default drain finish. Needs Compose v2, not an engine.

use crate::stack::compose_config;

/// Seconds in a Go duration as compose prints it (`31m0s`, `1h2m`, `90s`).
fn seconds(duration: &str) -> f64 {
    let (mut total, mut number) = (0.0, String::new());
    for c in duration.chars() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600.0,
            'm' => 60.0,
            's' => 1.0,
            other => panic!("unit {other:?} in {duration:?}"),
        };
        total += number.parse::<f64>().expect("a number before the unit") * unit;
        number.clear();
    }
    total
}

#[test]
fn every_chatd_service_gives_the_default_drain_time_to_finish_before_a_kill() {
    let Some(config) = compose_config("grace-period") else {
        return;
    };
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example"))
        .expect(".env.example");
    let timeout: f64 = example
        .lines()
        .find_map(|line| line.trim().strip_prefix("SHUTDOWN_TIMEOUT="))
        .expect(".env.example sets SHUTDOWN_TIMEOUT")
        .parse()
        .expect("a number of seconds");

    for name in ["chatd", "chatd-a", "chatd-b"] {
        let service = &config["services"][name];
        let grace = service["stop_grace_period"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} sets stop_grace_period: {service}"));
        assert!(
            seconds(grace) >= timeout + 30.0,
            "{name}: stop_grace_period {grace} leaves SHUTDOWN_TIMEOUT={timeout} no margin"
        );
    }
}
