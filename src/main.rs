//! The `tally` binary: parse the configuration, set up logging, run.

use clap::Parser;
use tally::App;
use tally::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().into_command() {
        Command::Serve(config) => {
            tally::telemetry::init(config.log.as_deref(), config.log_format)?;
            let app = App::build(config).await?;
            app.run_until(tally::shutdown_signal()).await?;
        }
    }
    Ok(())
}
