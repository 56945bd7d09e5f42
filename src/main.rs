//! The `tally` binary: parse the configuration, set up logging, run.

use clap::Parser;
use tally::App;
use tally::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().into_command() {
        Command::Serve(config) => {
            tally::telemetry::init(config.log.as_deref(), config.log_format)?;
            let app = App::build(*config).await?;
            app.run_until(tally::shutdown_signal()).await?;
        }
        Command::HashPassword { cost } => {
            let password = read_password()?;
            anyhow::ensure!(!password.is_empty(), "the password is empty");
            println!("{}", bcrypt::hash(password, cost)?);
        }
    }
    Ok(())
}

/// The password: at a prompt that does not echo it on a terminal, or the
/// first line of standard input (for scripts).
fn read_password() -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        return Ok(rpassword::prompt_password("Admin UI password: ")?);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
