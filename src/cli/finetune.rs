//! `dbn-serve finetune --model GREEDY.safetensors --spec SPEC.json`: the spec's fine-tuning
//! applied to a model that was pretrained exactly as the spec says, without pretraining again.
//! Given a model whose generative fine-tuning (e.g. up-down) was also done as the spec says,
//! only the spec's `classifier` stage runs, replacing the model's classifier.

use std::path::PathBuf;

use clap::Args;

use super::progress::ConsoleProgress;
use super::train::{default_out, read_spec, save_trained};
use super::{CliError, Context};
use crate::engine::data::MnistSplit;
use crate::engine::dbn::{finetune_model, train_classifier_stage, TrainOutcome};
use crate::engine::persist;
use crate::engine::spec::Limits;

#[derive(Debug, Args)]
pub struct FinetuneArgs {
    /// A greedily trained model (its card holds the spec it was trained from).
    #[arg(long)]
    model: PathBuf,
    /// The spec: the model's pretraining settings plus a `finetune` section.
    #[arg(long)]
    spec: PathBuf,
    /// Where to save the fine-tuned model (default: models/NAME.safetensors).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip measuring the test errors.
    #[arg(long)]
    no_test: bool,
}

pub fn run(ctx: &Context, args: FinetuneArgs) -> Result<(), CliError> {
    let spec = read_spec(&args.spec)?;
    if spec.finetune.is_none() {
        return Err(CliError::Usage("the spec has no finetune section".into()));
    }
    let (dbn, card) = persist::load(&args.model)?;
    let pretrained_as = card
        .spec
        .as_ref()
        .ok_or_else(|| CliError::Usage("the model does not record its spec".into()))?;
    if pretrained_as.pretraining() != spec.pretraining() {
        return Err(CliError::Usage(
            "the model was not pretrained as this spec says; train it with `train`".into(),
        ));
    }
    // A model fine-tuned generatively as the spec says needs only the classifier stage.
    let classifier_only = match &pretrained_as.finetune {
        None => false,
        Some(done) if Some(done) != spec.finetune.as_ref() => {
            return Err(CliError::Usage(
                "the model was fine-tuned otherwise than this spec says; train it with `train`"
                    .into(),
            ))
        }
        Some(_) if spec.classifier.is_none() => {
            return Err(CliError::Usage(
                "the model is already fine-tuned as this spec says and the spec has no classifier stage".into(),
            ))
        }
        Some(_) => true,
    };
    let train = ctx.load_mnist(MnistSplit::Train)?;
    let spec = spec.check_for(&train, &Limits::default())?;
    // Fine-tuning fills in the split's sizes.
    let outcome = TrainOutcome {
        dbn,
        history: Vec::new(),
        train_examples: 0,
        validation_examples: 0,
        validation_error: None,
        seconds: card.provenance.train_seconds,
    };
    let mut progress = ConsoleProgress::new(None, None);
    let outcome = if classifier_only {
        tracing::info!(
            "the model's generative fine-tuning matches the spec: training its classifier only"
        );
        train_classifier_stage(&spec, outcome, &train, &mut progress)?
    } else {
        finetune_model(&spec, outcome, &train, &mut progress)?
    };
    tracing::info!("pretraining and fine-tuning took {:.1}s", outcome.seconds);
    let out = default_out(&spec, args.out);
    save_trained(ctx, &spec, &outcome, &train, &out, !args.no_test)
}
