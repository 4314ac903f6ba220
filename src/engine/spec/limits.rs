//! Bounds that keep one spec (or one imported model) from exhausting the machine, and the
//! one count of weights they are checked against.

use crate::engine::error::{EngineError, Result};

/// Bounds that keep one spec from exhausting the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_layers: usize,
    pub max_units: usize,
    /// Weights across all layers.
    pub max_parameters: usize,
}

impl Limits {
    /// The one set of default bounds: the server's settings default to these, and the
    /// command line trains within them, so whatever it trains the server accepts.
    pub const DEFAULT: Limits = Limits {
        max_layers: 10,
        max_units: 20_000,
        max_parameters: 50_000_000,
    };

    /// Checks a trained model (one read from a file) against the bounds a spec is held to.
    pub fn check_model(&self, dbn: &crate::engine::dbn::Dbn) -> Result<()> {
        let exceeds = |what: String| Err(EngineError::invalid("model", what));
        let layers = dbn.layers();
        if layers.len() > self.max_layers {
            let n = layers.len();
            return exceeds(format!(
                "{n} layers exceed the limit of {}",
                self.max_layers
            ));
        }
        let widest = layers.iter().map(|l| l.n_hidden()).max().unwrap_or(0);
        if widest > self.max_units {
            return exceeds(format!(
                "a layer of {widest} units exceeds the limit of {}",
                self.max_units
            ));
        }
        let params = dbn.parameter_count();
        if params > self.max_parameters {
            return exceeds(format!(
                "{params} weights exceed the limit of {}",
                self.max_parameters
            ));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Weights of one layer of `below` visible and `hidden` hidden units, counting a sequence
/// model's conditioning weights for `order` past frames (A: [order·V, V], B: [order·V, H]).
/// Saturates rather than overflows, so absurd sizes compare as too large.
pub fn layer_parameters(below: usize, hidden: usize, order: usize) -> usize {
    let past = order.saturating_mul(below);
    below
        .saturating_mul(hidden)
        .saturating_add(past.saturating_mul(below.saturating_add(hidden)))
}

impl super::TrainingSpec {
    /// Weights of layer `i`, conditioning weights included ([`layer_parameters`]).
    pub fn layer_parameters(&self, i: usize, n_inputs: usize, classes: usize) -> usize {
        let order = self.sequence.as_ref().map_or(0, |s| s.order);
        layer_parameters(
            self.layer_visible(i, n_inputs, classes),
            self.architecture.hidden[i],
            order,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::dbn::Dbn;
    use crate::engine::rbm::Rbm;
    use crate::engine::spec::TrainingSpec;

    fn spec(hidden: &[usize]) -> TrainingSpec {
        let mut spec = TrainingSpec::digit_model();
        spec.architecture.hidden = hidden.to_vec();
        spec
    }

    /// A 8-6-5 stack with 3 labels joined to the top, as the spec would train it.
    fn model() -> Dbn {
        let mut rng = crate::engine::rng_from_seed(1);
        let bottom = Rbm::new(8, 6, 0, 0.1, &mut rng).unwrap();
        let top = Rbm::new(6 + 3, 5, 3, 0.1, &mut rng).unwrap();
        Dbn::new(vec![bottom, top]).unwrap()
    }

    #[test]
    fn a_spec_and_the_model_it_trains_count_the_same_weights() {
        let spec = spec(&[6, 5]);
        let planned: usize = (0..2).map(|i| spec.layer_parameters(i, 8, 3)).sum();
        assert_eq!(planned, 8 * 6 + 9 * 5);
        assert_eq!(model().parameter_count(), planned);
    }

    #[test]
    fn conditioning_weights_count_order_times_the_past() {
        // A: [2·4, 4] and B: [2·4, 3] besides W: [4, 3].
        assert_eq!(layer_parameters(4, 3, 2), 4 * 3 + 8 * 4 + 8 * 3);
        assert_eq!(layer_parameters(usize::MAX, 2, 1), usize::MAX);
    }

    #[test]
    fn a_model_is_held_to_every_bound_a_spec_is() {
        let dbn = model();
        let at = Limits {
            max_layers: 2,
            max_units: 6,
            max_parameters: dbn.parameter_count(),
        };
        assert!(at.check_model(&dbn).is_ok());
        for (past, what) in [
            (
                Limits {
                    max_layers: 1,
                    ..at
                },
                "layers",
            ),
            (Limits { max_units: 5, ..at }, "units"),
            (
                Limits {
                    max_parameters: at.max_parameters - 1,
                    ..at
                },
                "weights",
            ),
        ] {
            let err = past.check_model(&dbn).unwrap_err().to_string();
            assert!(err.contains(what), "{what}: {err}");
        }
    }
}
