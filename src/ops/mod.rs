//! Operating the server: the offline commands over a database file ([`commands`]) and the
//! metric names and exporter behind `/metrics` ([`metrics`]).

pub mod commands;
pub mod metrics;
