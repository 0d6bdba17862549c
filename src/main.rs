use std::process::ExitCode;

use chatd::{telemetry, Application, Config};

fn main() -> ExitCode {
    if let Err(err) = dotenvy::dotenv() {
        if !err.not_found() {
            eprintln!("chatd: cannot read .env: {err}");
            return ExitCode::from(2);
        }
    }
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
