//! OpenAPI schemas of the engine's serde types. The engine stays free of utoipa, so these
//! twins describe its JSON; a test checks that each twin has exactly the fields the engine
//! type serialises.

#![allow(dead_code)]

mod records;
mod spec;

pub use records::*;
pub use spec::*;

#[cfg(test)]
mod tests;
