use std::process::ExitCode;

use chatd::{healthcheck, telemetry, Application, Config};

fn main() -> ExitCode {
    if let Err(err) = dotenvy::dotenv() {
        if !err.not_found() {
            eprintln!("chatd: cannot read .env: {err}");
            return ExitCode::from(2);
        }
    }
    match std::env::args_os().nth(1) {
        None => serve(),
        Some(command) if command == "healthcheck" => healthcheck::run(),
        Some(other) => {
            eprintln!("chatd: unknown command {other:?}: expected none (serve) or `healthcheck`");
            ExitCode::from(2)
        }
    }
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
