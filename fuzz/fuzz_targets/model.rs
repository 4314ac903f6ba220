//! Model import: any bytes either load as a model that saves back to the same model and
//! classifies, or are refused with an error.
#![no_main]

use dbn_serve::engine::persist::{from_bytes, to_bytes};
use libfuzzer_sys::fuzz_target;
use ndarray::Array2;

fuzz_target!(|data: &[u8]| {
    let Ok((dbn, card)) = from_bytes(data) else {
        return;
    };
    let (again, card_again) = from_bytes(&to_bytes(&dbn, &card).expect("saves")).expect("reloads");
    assert!(again == dbn && card_again == card);
    let x = Array2::from_elem((2, dbn.n_inputs()), 0.5f32);
    dbn.features(x.view()).expect("features of the right shape");
    if dbn.label_classes() > 0 {
        let p = dbn.classify_free_energy(x.view()).expect("classifies");
        assert!(p.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
    }
    if dbn.classifier().is_some() {
        dbn.classify_discriminative(x.view()).expect("classifies");
    }
});
