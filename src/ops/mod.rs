//! Operating the server offline: the commands over a database file ([`commands`]). The metric
//! names and the exporter behind `/metrics` are [`crate::metrics`], a leaf every layer records
//! into.

pub mod commands;
