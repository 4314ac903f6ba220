//! Generation quality: `cargo bench --bench generation -- --model FILE [--per-label N]
//! [--steps S] [--grid docs/samples.png]`.
//!
//! Generates N samples for each clamped label and asks an independent classifier (3-nearest
//! neighbours on raw pixels, over all 60,000 MNIST training images) which digit each one is.
//! Prints the fraction assigned to the clamped label, per label and overall, the k-NN's own
//! error on the MNIST test set as its credential, and writes a 10×10 grid (one row per label).

mod common;

use std::path::PathBuf;

use common::{arg, mnist_dir};

use dbn_serve::engine::data::{Dataset, MnistSplit};
use dbn_serve::engine::math::matmul;
use dbn_serve::engine::{persist, rng_from_seed};
use dbn_serve::render::{grid_png, Scale};
use ndarray::{concatenate, s, Array2, ArrayView2, Axis};

/// Labels by majority of the 3 nearest training images (Euclidean, ties to the nearest).
fn knn3(train: &Dataset, queries: ArrayView2<f32>) -> Vec<usize> {
    let norms: Vec<f32> = train.images.rows().into_iter().map(|r| r.dot(&r)).collect();
    let mut out = Vec::with_capacity(queries.nrows());
    for chunk in queries.axis_chunks_iter(Axis(0), 500) {
        let mut dots = Array2::zeros((chunk.nrows(), train.len()));
        matmul(dots.view_mut(), false, chunk, train.images.t(), 1.0);
        for row in dots.rows() {
            // ‖q − t‖² = ‖q‖² + ‖t‖² − 2 q·t; ‖q‖² is the same for every t.
            let mut best = [(f32::INFINITY, 0usize); 3];
            for (t, &d) in row.iter().enumerate() {
                let dist = norms[t] - 2.0 * d;
                if dist < best[2].0 {
                    best[2] = (dist, t);
                    best.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
                }
            }
            let votes: Vec<usize> = best
                .iter()
                .map(|&(_, t)| train.labels[t] as usize)
                .collect();
            let label = if votes[1] == votes[2] {
                votes[1]
            } else {
                votes[0]
            };
            out.push(label);
        }
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model: PathBuf = arg(
        &args,
        "--model",
        PathBuf::from("models/mnist-dbn.safetensors"),
    );
    let per_label: usize = arg(&args, "--per-label", 100);
    let steps: usize = arg(&args, "--steps", 1000);
    let grid: PathBuf = arg(&args, "--grid", PathBuf::from("docs/samples.png"));
    let train = Dataset::load_mnist(&mnist_dir(), MnistSplit::Train).expect("MNIST train");
    let test = Dataset::load_mnist(&mnist_dir(), MnistSplit::Test).expect("MNIST test");
    let (dbn, card) = persist::load(&model).expect("model");

    let knn_test = knn3(&train, test.images.view());
    let knn_err = knn_test
        .iter()
        .zip(&test.labels)
        .filter(|(p, &l)| **p != l as usize)
        .count() as f64
        / test.len() as f64;
    println!("judge=knn3_raw_pixels test_error={:.4}", knn_err);

    let mut rng = rng_from_seed(2026);
    let mut rows = Vec::new();
    let mut total_ok = 0;
    for label in 0..dbn.label_classes() {
        let images = dbn
            .generate(Some(label), per_label, steps, &mut rng)
            .expect("generate");
        let judged = knn3(&train, images.view());
        let ok = judged.iter().filter(|&&p| p == label).count();
        total_ok += ok;
        println!(
            "label={label} samples={per_label} judged_as_label={:.3}",
            ok as f64 / per_label as f64
        );
        rows.push(images.slice(s![..10.min(per_label), ..]).to_owned());
    }
    let n = per_label * dbn.label_classes();
    println!(
        "model={} steps={steps} samples={n} fraction_judged_as_clamped_label={:.4}",
        card.name,
        total_ok as f64 / n as f64
    );
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    let all = concatenate(Axis(0), &views).unwrap();
    let png = grid_png(all.view(), 28, 28, 10.min(per_label), Scale::Unit).unwrap();
    persist::write_atomic(&grid, &png).unwrap();
    println!("grid={}", grid.display());
}
