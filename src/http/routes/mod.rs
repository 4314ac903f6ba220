//! The routes, one module per resource, each owning its `router()`.

pub mod aliases;
pub mod classify;
pub mod codes;
pub mod datasets;
pub mod generation;
pub mod inputs;
pub mod jobs;
pub mod models;
pub mod oip;
pub mod ops;
pub mod sequences;
pub mod ui;
