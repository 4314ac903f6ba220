//! Fine-tuning of a greedily learned DBN: discriminatively, by backpropagation through the
//! unrolled recognition weights with a softmax output layer.

mod backprop;
mod config;
mod net;

pub use backprop::{evaluate, train_backprop, FinetuneRun};
pub use config::{BackpropConfig, MAX_FINETUNE_EPOCHS};
pub use net::{Classifier, Dense};
