//! Checkpoint files (greedy and fine-tuning), as a restart reads them from the data directory:
//! parsed or refused, and whatever parses serialises again.
#![no_main]

use dbn_serve::engine::dbn::Checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(checkpoint) = Checkpoint::from_bytes(data) else {
        return;
    };
    let bytes = checkpoint.to_bytes().expect("serialises");
    let again = Checkpoint::from_bytes(&bytes).expect("parses its own bytes");
    assert_eq!(again.history().len(), checkpoint.history().len());
});
