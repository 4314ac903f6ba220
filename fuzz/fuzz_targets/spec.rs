//! Training specs as POST /v1/jobs receives them: JSON, then validation against MNIST's shape
//! and the default limits; a valid spec's derived figures must be finite.
#![no_main]

use dbn_serve::engine::spec::{Limits, TrainingSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<TrainingSpec>(data) else {
        return;
    };
    if spec.validate(784, 10, &Limits::default()).is_err() {
        return;
    }
    for layer in 0..spec.architecture.hidden.len() {
        let config = spec.layer_config(layer);
        assert!(config.epochs > 0);
        assert!(spec.layer_work(layer, 784, 10, 60_000).is_finite());
    }
    let share = spec.finetune_share(784, 10, 60_000);
    assert!((0.0..=1.0).contains(&share), "{share}");
});
