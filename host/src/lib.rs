//! The jobbox host: the sandbox that runs handler components, the worker that feeds
//! it jobs from NATS JetStream, and the `jobbox` command line.

pub mod causes;
pub mod cli;
pub mod dashboard;
pub mod metrics;
pub mod otel;
pub mod registry;
pub mod sandbox;
pub mod worker;
