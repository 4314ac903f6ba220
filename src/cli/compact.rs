//! `dbn-serve compact --model IN --out OUT`: the model with every real value stored as
//! bfloat16, half the bytes (how the bundled default model ships). The test metrics are
//! measured again on the rounded weights; the f32 model's are kept beside them as `f32_…`.

use std::path::PathBuf;

use clap::Args;

use super::{CliError, Context};
use crate::engine::data::MnistSplit;
use crate::engine::dbn::test_metrics;
use crate::engine::persist;

#[derive(Debug, Args)]
pub struct CompactArgs {
    /// The model file (.safetensors) to compact.
    #[arg(long)]
    model: PathBuf,
    /// Where to write the compacted model.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(ctx: &Context, args: CompactArgs) -> Result<(), CliError> {
    let (dbn, mut card) = persist::load(&args.model)?;
    if card.provenance.storage == "bf16" {
        return Err(CliError::Usage("the model is compacted already".into()));
    }
    let test = ctx.load_mnist(MnistSplit::Test)?;
    let before = test_metrics(card.spec.as_ref(), &dbn, &test)?;
    card.provenance.storage = "bf16".into();
    let (rounded, _) = persist::from_bytes(&persist::to_bytes_bf16(&dbn, &card)?)?;
    let after = test_metrics(card.spec.as_ref(), &rounded, &test)?;
    for (name, value) in &before {
        card.metrics.insert(format!("f32_{name}"), *value);
        tracing::info!(
            "{name}: f32 {value:.5}, bf16 {:.5}",
            after.get(name).copied().unwrap_or(f64::NAN)
        );
    }
    card.metrics.extend(after);
    // Rounding is idempotent: the rounded model writes the same values again.
    let bytes = persist::to_bytes_bf16(&rounded, &card)?;
    persist::write_atomic(&args.out, &bytes)?;
    println!(
        "{} ({} bytes, from {} bytes)",
        args.out.display(),
        bytes.len(),
        std::fs::metadata(&args.model).map_or(0, |m| m.len())
    );
    Ok(())
}
