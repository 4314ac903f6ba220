//! Fine-tuning of a greedily learned DBN: discriminatively, by backpropagation through the
//! unrolled recognition weights with a softmax output layer; generatively, by the up-down
//! algorithm; as a deep autoencoder, by backpropagation of the reconstruction error through
//! the unrolled encoder and decoder; and by the wake-sleep algorithm, as a logistic belief net
//! with separate recognition and generative weights.

mod autoencoder;
mod backprop;
mod config;
mod hybrid;
mod net;
mod run;
mod updown;
mod wake_sleep;

pub use autoencoder::{
    mean_squared_distance, train_autoencoder, AutoencoderConfig, DeepAutoencoder,
};
pub use backprop::{evaluate, train_backprop};
pub use config::{BackpropConfig, MAX_FINETUNE_BATCH, MAX_FINETUNE_EPOCHS};
pub use net::{Classifier, Dense};
pub use run::{FinetuneRun, FinetuneState};
pub use updown::{train_up_down, UpDownConfig};
pub use wake_sleep::{train_wake_sleep, BeliefNet, WakeSleepConfig, WakeSleepInit, BOUND_SAMPLES};
