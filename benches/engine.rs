//! Engine benchmarks: `cargo bench --bench engine -- [products|cd1|classify] [options]`.
//!
//! - products: median time and GFLOP/s of the CD-1 matrix products, dense and sparse paths.
//! - cd1 --epochs 5: one 784→500 RBM trained by CD-1 on all 60,000 MNIST images with the
//!   settings of the numpy reference (shared/reference/rbm_numpy.py); seconds per epoch,
//!   examples/s, achieved GFLOP/s (10·N·V·H per epoch) and reconstruction errors.
//! - classify [--model FILE]: free-energy classification with the 784-500-500-2000(+10)
//!   model, one image at a time (median µs) and in batches of 10,000 (images/s).
//!
//! MNIST is read from $DBN_MNIST_DIR (default ../shared/data/mnist).

mod common;

use std::path::PathBuf;

use common::{arg, mnist_dir};
use std::time::Instant;

use dbn_serve::engine::data::{Dataset, MnistSplit};
use dbn_serve::engine::dbn::Dbn;
use dbn_serve::engine::math::{x_times_w, xt_times_p_add};
use dbn_serve::engine::observer::{Phase, Silent};
use dbn_serve::engine::rbm::{train_rbm, LayerRun, Rbm, RbmTrainConfig, VisibleBiasInit};
use dbn_serve::engine::{persist, rng_from_seed};
use ndarray::{s, Array2};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn time_it(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn mnist(split: MnistSplit) -> Dataset {
    Dataset::load_mnist(&mnist_dir(), split).expect("MNIST (set DBN_MNIST_DIR)")
}

fn products() {
    let train = mnist(MnistSplit::Train);
    let v0 = train.images.slice(s![..100, ..]).to_owned();
    let mut rng = rng_from_seed(1);
    let rbm = Rbm::new(784, 500, 0, 0.01, &mut rng).unwrap();
    let p = rbm.hidden_probs(v0.view());
    let dense_v = rbm.visible_probs(p.view());
    let mut out = Array2::zeros((100, 500));
    let mut back = Array2::zeros((100, 784));
    let mut stats = Array2::zeros((784, 500));
    let flop = 2.0 * 100.0 * 784.0 * 500.0;
    let report = |name: &str, secs: f64| {
        println!(
            "product={name} us={:.1} gflops={:.1}",
            secs * 1e6,
            flop / secs / 1e9
        )
    };
    report(
        "v0·W sparse",
        time_it(200, || {
            x_times_w(v0.view(), rbm.weights.view(), out.view_mut())
        }),
    );
    report(
        "v1·W dense",
        time_it(200, || {
            x_times_w(dense_v.view(), rbm.weights.view(), out.view_mut())
        }),
    );
    report(
        "h·Wt dense",
        time_it(200, || {
            dbn_serve::engine::math::matmul(back.view_mut(), false, p.view(), rbm.weights.t(), 1.0)
        }),
    );
    report(
        "v0t·p sparse",
        time_it(200, || {
            xt_times_p_add(v0.view(), p.view(), 1e-3, stats.view_mut())
        }),
    );
    report(
        "v1t·p dense",
        time_it(200, || {
            xt_times_p_add(dense_v.view(), p.view(), 1e-3, stats.view_mut())
        }),
    );
}

fn cd1(args: &[String]) {
    let epochs: usize = arg(args, "--epochs", 5);
    let train = mnist(MnistSplit::Train);
    let test = mnist(MnistSplit::Test);
    let (n, v, h) = (train.len() as f64, 784.0, 500.0);
    let flop = 10.0 * n * v * h;
    let mut rng = rng_from_seed(0);
    let mut rbm = Rbm::new(784, 500, 0, 0.01, &mut rng).unwrap();
    let mut times = Vec::new();
    for epoch in 0..epochs {
        // One epoch at a time so the momentum schedule continues across calls: the epoch
        // index is folded into the schedule by shifting the switch.
        let config = RbmTrainConfig {
            epochs: 1,
            visible_bias_init: VisibleBiasInit::Zero,
            momentum_switch_epoch: 5usize.saturating_sub(epoch),
            ..RbmTrainConfig::default()
        };
        let mut run = LayerRun {
            resume: None,
            done: &[],
            history: &[],
            fingerprint: 0,
            phase: Phase::Pretrain,
            layer: 0,
            layers: 1,
            fraction: (0.0, 1.0),
            validation: None,
            observer: &mut Silent,
        };
        let m = train_rbm(&mut rbm, train.images.view(), &config, &mut run, &mut rng)
            .unwrap()
            .remove(0);
        let recon_test = rbm.reconstruction_error(test.images.view());
        times.push(m.seconds);
        println!(
            "epoch={} seconds={:.3} examples_per_s={:.0} gemm_gflops={:.1} recon_train_avg={:.3} recon_test={:.3} momentum={}",
            epoch + 1, m.seconds, n / m.seconds, flop / m.seconds / 1e9, m.recon_error_train.unwrap(), recon_test, m.momentum
        );
    }
    let med = median(times.clone());
    println!(
        "impl=dbn_serve_cd1_f32 threads={} epochs={epochs} epoch_s_median={med:.3} min={:.3} max={:.3} examples_per_s_median={:.0} achieved_gemm_gflops_median={:.1}",
        rayon::current_num_threads(),
        times.iter().cloned().fold(f64::INFINITY, f64::min),
        times.iter().cloned().fold(0.0, f64::max),
        n / med,
        flop / med / 1e9
    );
}

fn classify(args: &[String]) {
    let dbn = match args
        .iter()
        .position(|a| a == "--model")
        .and_then(|i| args.get(i + 1))
    {
        Some(path) => persist::load(&PathBuf::from(path)).unwrap().0,
        None => {
            let mut rng = rng_from_seed(2);
            let layers = vec![
                Rbm::new(784, 500, 0, 0.01, &mut rng).unwrap(),
                Rbm::new(500, 500, 0, 0.01, &mut rng).unwrap(),
                Rbm::new(510, 2000, 10, 0.01, &mut rng).unwrap(),
            ];
            Dbn::new(layers).unwrap()
        }
    };
    let test = mnist(MnistSplit::Test);
    let mut i = 0;
    let single = time_it(2000, || {
        let x = test.images.slice(s![i % 10000..i % 10000 + 1, ..]);
        std::hint::black_box(dbn.classify_free_energy(x).unwrap());
        i += 1;
    });
    let mut few = Vec::new();
    for rows in [4, 8, 16, 32] {
        let mut i = 0;
        let t = time_it(500, || {
            let x = test.images.slice(s![i % 9950..i % 9950 + rows, ..]);
            std::hint::black_box(dbn.classify_free_energy(x).unwrap());
            i += rows;
        });
        few.push(format!(
            "rows{rows}_us_per_image={:.1}",
            t * 1e6 / rows as f64
        ));
    }
    println!("{}", few.join(" "));
    let mut i = 0;
    let features = time_it(2000, || {
        let x = test.images.slice(s![i % 10000..i % 10000 + 1, ..]);
        std::hint::black_box(dbn.features(x).unwrap());
        i += 1;
    });
    let base: Vec<f32> = (0..2000).map(|j| (j % 37) as f32 * 0.3 - 5.0).collect();
    let shift: Vec<f32> = (0..2000).map(|j| (j % 11) as f32 * 0.1).collect();
    let softplus = time_it(2000, || {
        for _ in 0..10 {
            std::hint::black_box(dbn_serve::engine::math::softplus_sum_shifted(
                std::hint::black_box(&base),
                &shift,
            ));
        }
    });
    println!("softplus_10x2000_one_thread_us={:.1}", softplus * 1e6);
    let top = &dbn.layers()[dbn.layers().len() - 1];
    let h2 = dbn.features(test.images.slice(s![..1, ..])).unwrap();
    let nf = h2.ncols();
    let w_f = top.weights.slice(s![..nf, ..]);
    let mut out = Array2::zeros((1, top.n_hidden()));
    let gemv = time_it(2000, || x_times_w(h2.view(), w_f, out.view_mut()));
    println!(
        "top_gemv_{}x{}_us={:.1} gb_per_s={:.1}",
        nf,
        top.n_hidden(),
        gemv * 1e6,
        (nf * top.n_hidden() * 4) as f64 / gemv / 1e9
    );
    let batch = time_it(5, || {
        std::hint::black_box(dbn.classify_free_energy(test.images.view()).unwrap());
    });
    println!(
        "classify_free_energy threads={} single_image_us_median={:.1} of_which_up_pass_us={:.1} batch10000_s_median={:.3} batch_images_per_s={:.0}",
        rayon::current_num_threads(),
        single * 1e6,
        features * 1e6,
        batch,
        10000.0 / batch
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let threads: usize = arg(&args, "--threads", 0);
    if threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .unwrap();
    }
    match args.first().map(String::as_str) {
        Some("products") => products(),
        Some("cd1") => cd1(&args),
        Some("classify") => classify(&args),
        _ => {
            products();
            cd1(&args);
            classify(&args);
        }
    }
}
