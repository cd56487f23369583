//! The background half of `serve`: turns recorded rollouts into canary releases.

pub mod run;
