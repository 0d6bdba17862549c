use std::process::ExitCode;

use std::collections::HashSet;

use chatd::{config, healthcheck, telemetry, Application, Config};

fn main() -> ExitCode {
    // Before `.env` is read, which never overrides the environment.
    let environment = config::report::given_in_environment();
    if let Err(err) = dotenvy::dotenv() {
        if !err.not_found() {
            eprintln!("chatd: cannot read .env: {err}");
            return ExitCode::from(2);
        }
    }
    match std::env::args_os().nth(1) {
        None => serve(),
        Some(command) if command == "healthcheck" => healthcheck::run(),
        Some(command) if command == "config" => match std::env::args_os().nth(2) {
            Some(flag) if flag == "--markdown" => {
                print!("{}", config::settings::markdown_table());
                ExitCode::SUCCESS
            }
            _ => show_config(&environment),
        },
        Some(other) => {
            eprintln!("chatd: unknown command {other:?}: expected none (serve) or `healthcheck`");
            ExitCode::from(2)
        }
    }
}

/// Prints the effective settings and where each came from, after checking
/// them as start-up would.
fn show_config(environment: &HashSet<&'static str>) -> ExitCode {
    if let Err(err) = Config::from_env() {
        eprintln!("chatd: {err}");
        return ExitCode::from(2);
    }
    print!(
        "{}",
        config::report::render(|key| std::env::var(key).ok(), environment)
    );
    ExitCode::SUCCESS
}

/// Loads the configuration, starts logging and runs the server until it
/// has drained.
fn serve() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("chatd: {err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log_level);
    match actix_web::rt::System::new().block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            log::error!("{err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let app = Application::build(config)?;
    app.listen_for_signals()?;
    app.run_until_stopped().await?;
    Ok(())
}
