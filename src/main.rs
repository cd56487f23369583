#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    canary_gate::cli::run(canary_gate::cli::Args::parse()).await
}
