//! The rollout: its state, the pure state machine and the objects it wants in the cluster.

pub mod state;
