//! `dbn-serve sample --model FILE --label 3 --count 16 --out grid.png`: generated digits.

use std::path::PathBuf;

use clap::Args;
use ndarray::{concatenate, Axis};

use super::{CliError, Context};
use crate::engine::persist;
use crate::render::{grid_png, Scale};

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// The model file (.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Label to clamp; without it, one row of `count` samples for every label (one row of free
    /// samples for a model without labels).
    #[arg(long)]
    label: Option<usize>,
    /// Samples per label.
    #[arg(long, default_value_t = 16)]
    count: usize,
    /// Gibbs steps in the top RBM before the down-pass.
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The PNG file to write.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(_ctx: &Context, args: SampleArgs) -> Result<(), CliError> {
    let (dbn, card) = persist::load(&args.model)?;
    let [h, w] = card
        .image_shape
        .ok_or_else(|| CliError::Usage("the model does not say its image shape".into()))?;
    let mut rng = crate::engine::rng_from_seed(args.seed);
    // One row per label, or one row of free samples for a model without labels.
    let labels: Vec<Option<usize>> = match args.label {
        Some(l) => vec![Some(l)],
        None if dbn.label_classes() == 0 => vec![None],
        None => (0..dbn.label_classes()).map(Some).collect(),
    };
    let rows = labels
        .iter()
        .map(|&l| dbn.generate(l, args.count, args.steps, &mut rng))
        .collect::<Result<Vec<_>, _>>()?;
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    let images = concatenate(Axis(0), &views).map_err(|e| CliError::Usage(e.to_string()))?;
    let png = grid_png(images.view(), h, w, args.count, Scale::Unit)?;
    crate::engine::persist::write_atomic(&args.out, &png)?;
    println!("{}", args.out.display());
    Ok(())
}
