#![forbid(unsafe_code)]

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args = match canary_gate::cli::parse() {
        Ok(args) => args,
        Err(code) => return ExitCode::from(code),
    };
    match canary_gate::cli::run(args).await {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(canary_gate::cli::EXIT_ERROR)
        }
    }
}
