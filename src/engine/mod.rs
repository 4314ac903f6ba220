//! The numeric engine: pure numerics on ndarray. It knows nothing of HTTP, async or jobs;
//! it reports progress through [`observer::Observer`] and takes every random generator as an
//! argument.

pub mod cancel;
pub mod crbm;
pub mod data;
pub mod dbn;
pub mod error;
pub mod finetune;
pub mod math;
pub mod observer;
pub mod persist;
pub mod rbm;
pub mod spec;

pub use error::{DataError, EngineError};

/// The generator the engine's callers use: fast, small, and stable across versions.
pub type EngineRng = rand_xoshiro::Xoshiro256PlusPlus;

/// The generator for a seed.
pub fn rng_from_seed(seed: u64) -> EngineRng {
    use rand::SeedableRng;
    EngineRng::seed_from_u64(seed)
}
