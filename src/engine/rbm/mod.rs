//! Restricted Boltzmann machines: binary (Bernoulli) or Gaussian units on either side (not
//! both), optionally one softmax group of visible units (the label units of the top-level
//! RBM), learned by contrastive divergence (CD-k) or persistent CD.

mod ais;
mod autoencoder;
mod config;
mod gibbs;
mod lateral;
mod model;
mod state;
mod train;
mod units;

pub use ais::{
    base_rate_biases, estimate_log_z, log_prob_report, mean_log_prob, sample_binary, AisConfig,
    AisEstimate, LogProbReport, RunSpread,
};
pub use config::{LayerMethod, RbmTrainConfig, VisibleBiasInit, MAX_BATCH, MAX_CD_K, MAX_EPOCHS};
pub use gibbs::{Clamp, GibbsState};
pub use lateral::{DAMPING, LATERAL_RATE, SETTLE_STEPS};
pub use model::Rbm;
pub(crate) use state::is_permutation;
pub use state::LayerState;
pub(crate) use train::shuffle;
pub use train::{train_rbm, LayerRun};
pub use units::Units;
