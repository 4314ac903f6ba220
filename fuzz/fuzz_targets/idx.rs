//! IDX files (raw or gzipped), as uploads reach them: parse, and whatever parses must encode
//! back to the same array and make a dataset or a clear error.
#![no_main]

use dbn_serve::engine::data::idx::encode_idx;
use dbn_serve::engine::data::{parse_idx, Dataset};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(array) = parse_idx("fuzz", data, 1 << 22) else {
        return;
    };
    let again = parse_idx("again", &encode_idx(&array), 1 << 22).expect("own encoding parses");
    assert_eq!(again.dims, array.dims);
    assert_eq!(again.data, array.data);
    // The same array as images and as labels: either a dataset or an error, never a panic.
    if let Ok(d) = Dataset::from_idx(&array, &array, None, 10) {
        assert_eq!(d.images.nrows(), d.labels.len());
        assert!(d.images.iter().all(|p| (0.0..=1.0).contains(p)));
    }
});
