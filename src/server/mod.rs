//! The HTTPS webhook server and the plain-HTTP admin server.

pub mod health;
pub mod http;
pub mod tls;
