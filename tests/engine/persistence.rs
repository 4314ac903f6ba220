//! Saving and loading: exact round trips, and corrupt or foreign files rejected.

use dbn_serve::engine::dbn::Dbn;
use dbn_serve::engine::persist::{self, ModelCard, Provenance};
use dbn_serve::engine::rbm::Rbm;
use dbn_serve::engine::rng_from_seed;
use ndarray::Array2;

fn model() -> (Dbn, ModelCard) {
    let mut rng = rng_from_seed(7);
    let dbn = Dbn::new(vec![
        Rbm::new(16, 8, 0, 0.5, &mut rng).unwrap(),
        Rbm::new(11, 6, 3, 0.5, &mut rng).unwrap(),
    ])
    .unwrap();
    let card = ModelCard {
        name: "tiny".into(),
        sizes: dbn.sizes(),
        label_classes: 3,
        image_shape: Some([4, 4]),
        spec: None,
        provenance: Provenance {
            dataset: "synthetic".into(),
            seed: 7,
            ..Provenance::default()
        },
        metrics: [("test_error".to_string(), 0.25)].into_iter().collect(),
    };
    (dbn, card)
}

#[test]
fn a_saved_model_loads_bit_identical_and_predicts_identically() {
    let (dbn, card) = model();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/model.safetensors");
    persist::save(&path, &dbn, &card).unwrap();
    let (loaded, loaded_card) = persist::load(&path).unwrap();
    assert_eq!(loaded, dbn);
    assert_eq!(loaded_card, card);
    let x = Array2::from_shape_fn((9, 16), |(r, i)| ((r * 5 + i) % 4) as f32 / 3.0);
    let a = dbn.classify_free_energy(x.view()).unwrap();
    let b = loaded.classify_free_energy(x.view()).unwrap();
    assert!(
        a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
        "predictions must be bit-identical"
    );
    // Two saves of one model are the same bytes (reproducible files, usable as content hashes).
    assert!(persist::to_bytes(&dbn, &card).unwrap() == persist::to_bytes(&dbn, &card).unwrap());
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temporary file remains after an atomic write"
    );
}

#[test]
fn corrupt_foreign_and_inconsistent_files_are_rejected() {
    let (dbn, card) = model();
    let bytes = persist::to_bytes(&dbn, &card).unwrap();
    assert!(persist::from_bytes(&bytes).is_ok());
    // Truncated anywhere.
    for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
        assert!(persist::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    // Not safetensors at all.
    assert!(persist::from_bytes(b"\x89PNG\r\n\x1a\nthis is not a model").is_err());
    // A valid safetensors file that is not ours.
    let data = vec![0u8; 16];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &data).unwrap();
    let foreign = safetensors::serialize([("w", view)], None).unwrap();
    let e = persist::from_bytes(&foreign).unwrap_err();
    assert!(e.to_string().contains("not a dbn-serve"), "{e}");
    // A card that disagrees with the tensors.
    let mut lying = card.clone();
    lying.sizes = vec![16, 9, 6];
    let e = persist::from_bytes(&persist::to_bytes(&dbn, &lying).unwrap()).unwrap_err();
    assert!(e.to_string().contains("expected f32"), "{e}");
    // An image shape that does not multiply out to the inputs.
    let mut wrong_shape = card.clone();
    wrong_shape.image_shape = Some([4, 5]);
    let e = persist::from_bytes(&persist::to_bytes(&dbn, &wrong_shape).unwrap()).unwrap_err();
    assert!(e.to_string().contains("image shape"), "{e}");
    // A weight turned into NaN.
    let mut nan = dbn.layers().to_vec();
    nan[0].weights[[0, 0]] = f32::NAN;
    let bad = Dbn::new(nan).unwrap();
    assert!(persist::from_bytes(&persist::to_bytes(&bad, &card).unwrap()).is_err());
}
