//! The `cellns` binary: parse the command line, set up logging, and hand
//! over to the library. Errors are printed as one line and exit non-zero.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cellns::config::Cli::parse();
    cellns::telemetry::init(cli.log_format);
    match cellns::cli::run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
