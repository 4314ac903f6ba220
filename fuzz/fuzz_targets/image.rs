//! Uploaded pictures: PNG/JPEG decoding under a pixel budget, then MNIST-style preprocessing,
//! which must give 784 values in [0, 1] for anything that decodes.
#![no_main]

use dbn_serve::imaging::{decode, to_mnist, MNIST_SIDE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(image) = decode(data, 1 << 20) else {
        return;
    };
    let pixels = to_mnist(&image);
    assert_eq!(pixels.len(), MNIST_SIDE * MNIST_SIDE);
    assert!(pixels.iter().all(|p| (0.0..=1.0).contains(p)), "{pixels:?}");
});
