//! Conditional RBMs for sequences (Taylor, Hinton & Roweis 2006): each frame is modelled by
//! an RBM whose visible and hidden biases are set by the previous `order` frames; the layers
//! stack as a DBN does, each learning from the hidden probabilities of the one below. The
//! static weights and biases live in the DBN's ordinary layers; [`Temporal`] adds the
//! conditioning weights.

mod checkpoint;
mod config;
mod generate;
mod metrics;
mod model;
mod train;

pub use checkpoint::{CrbmState, TemporalCheckpoint, TEMPORAL_CHECKPOINT_FORMAT};
pub use config::{SequenceSpec, MAX_FRAME_VALUES, MAX_LENGTH};
pub use generate::{ContinueConfig, MAX_CONTINUE_FRAMES, MAX_GIBBS_STEPS};
pub use metrics::{
    sequence_metrics, HORIZON, MAX_TEST_SEQUENCES, PREDICT_GIBBS_STEPS, PREDICT_SAMPLES,
};
pub use model::{gather_past, Conditioning, Crbm, DynamicBiases, Temporal, MAX_ORDER};
pub use train::{next_frames, train_crbm, train_temporal, Frames, LayerProgress};
