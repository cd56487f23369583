#![forbid(unsafe_code)]

use clap::Parser;

// Every admission allocates and frees a few hundred small objects on two threads; glibc's
// malloc spent 15 % of the webhook's CPU on that (`scripts/bench-webhook.sh`, perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    canary_gate::cli::run(canary_gate::cli::Args::parse()).await
}
