//! The rollout: its state, the pure state machine and the objects it wants in the cluster.

pub mod hooks;
pub mod machine;
pub mod routes;
pub mod state;
pub mod twin;
