//! `dbn-serve compact --model IN --out OUT`: the model with every real value stored as
//! bfloat16, half the bytes (how the bundled default model ships). The test metrics are
//! measured again on the rounded weights; the f32 model's are kept beside them as `f32_…`.
//! `--metric NAME=VALUE` records figures measured elsewhere in the card too, such as the
//! validation figures the model's settings were chosen by, or a judge's verdict on its samples.

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
    /// A figure measured elsewhere to record in the card's metrics, as NAME=VALUE
    /// (e.g. `validation_error_free_energy=0.0119`); repeatable. Names starting with `test_`
    /// or `f32_` are refused: compact measures those itself.
    #[arg(long = "metric", value_parser = parse_metric)]
    metrics: Vec<(String, f64)>,
}

/// `NAME=VALUE` with a name of letters, digits and `_`, not one compact measures itself, and
/// a finite value.
fn parse_metric(text: &str) -> Result<(String, f64), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))?;
    let well_formed =
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !well_formed {
        return Err(format!(
            "a metric's name is letters, digits and _, got {name:?}"
        ));
    }
    if name.starts_with("test_") || name.starts_with("f32_") {
        return Err(format!(
            "{name}: compact measures the test_ and f32_ metrics itself"
        ));
    }
    match value.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok((name.to_string(), v)),
        _ => Err(format!(
            "{name}: the value must be a finite number, got {value:?}"
        )),
    }
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
    card.metrics.extend(args.metrics);
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

#[cfg(test)]
mod tests {
    use super::parse_metric;

    #[test]
    fn a_metric_is_a_name_and_a_finite_number() {
        assert_eq!(
            parse_metric("validation_error_free_energy=0.0119"),
            Ok(("validation_error_free_energy".to_string(), 0.0119))
        );
        assert_eq!(parse_metric("dreams=95"), Ok(("dreams".to_string(), 95.0)));
        for bad in [
            "validation_error",
            "=0.1",
            "two words=0.1",
            "test_error=0.01",
            "f32_test_error=0.01",
            "dreams=NaN",
            "dreams=inf",
            "dreams=",
            "dreams=ninety",
        ] {
            assert!(parse_metric(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
