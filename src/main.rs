use std::collections::HashSet;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use chatd::{config, healthcheck, telemetry, Application, Config};

/// chatd: a real-time WebSocket chat and notification server.
#[derive(Parser)]
#[command(
    name = "chatd",
    version,
    after_help = "Settings come from the environment and from a .env file in the working \
                  directory; every one is listed, with its default, in the README's \
                  Configuration section and by `chatd config`."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve until SIGTERM/SIGINT, then drain (the default)
    Serve,
    /// Print every setting's effective value and where it came from
    /// (default, .env or environment), secrets redacted
    Config {
        /// Print the README's settings table instead
        #[arg(long)]
        markdown: bool,
    },
    /// Ask the server on 127.0.0.1:$API_PORT for /healthz; exit 0 when healthy,
    /// 1 otherwise (for a container's HEALTHCHECK)
    Healthcheck,
}

fn main() -> ExitCode {
    // Usage errors exit 2 with the usage; --help and --version exit 0.
    let cli = Cli::parse();
    // Before `.env` is read, which never overrides the environment.
    let environment = config::report::given_in_environment();
    if let Err(err) = dotenvy::dotenv() {
        if !err.not_found() {
            eprintln!("chatd: cannot read .env: {err}");
            return ExitCode::from(2);
        }
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
        Command::Config { markdown: true } => {
            print!("{}", config::settings::markdown_table());
            ExitCode::SUCCESS
        }
        Command::Config { markdown: false } => show_config(&environment),
        Command::Healthcheck => healthcheck::run(),
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
    telemetry::init(&config.log_level, config.log_format);
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
