//! A variational lower bound on the log-probability a DBN assigns to data (Salakhutdinov &
//! Murray 2008, after Hinton, Osindero & Teh 2006): with the recognition distribution
//! q(h_1 … h_{L−1} | v) of the up-pass,
//!
//!   ln p(v) ≥ E_q[ ln p*(h_{L−1}) − ln Z_top + Σ_l ln p(h_{l−1} | h_l) ] + Σ_l H(q(h_l | h_{l−1}))
//!
//! where p*(h_{L−1}) = e^{−F(h_{L−1})} is the top RBM's unnormalised marginal (its ln Z from
//! AIS), p(h_{l−1} | h_l) the generative (top-down) distributions, and h_0 = v. The entropies
//! are exact; the expectation is an average over samples of the up-pass.

use ndarray::{Array2, ArrayView2, Axis};
use rand::Rng;

use super::Dbn;
use crate::engine::error::{EngineError, Result};
use crate::engine::math;
use crate::engine::rbm::{base_rate_biases, estimate_log_z, AisConfig, AisEstimate};

impl Dbn {
    /// Estimates ln Z of the top RBM by AIS (its base rates from the up-pass of `train`) and
    /// returns it with the bound on `test`, both binary. None for a one-layer net or a top
    /// RBM with label units, which have no such bound.
    pub fn log_prob_bound_with_ais<R: Rng + ?Sized>(
        &self,
        train: ArrayView2<f32>,
        test: ArrayView2<f32>,
        config: &AisConfig,
        samples: usize,
        rng: &mut R,
    ) -> Result<Option<(AisEstimate, f64)>> {
        if self.layers().len() < 2 || self.top().label_units > 0 {
            return Ok(None);
        }
        let base = base_rate_biases(self.features(train)?.view());
        let estimate = estimate_log_z(self.top(), base.view(), config, rng)?;
        let bound = self.log_prob_lower_bound(test, estimate.log_z, samples, rng)?;
        Ok(Some((estimate, bound)))
    }

    /// The mean over the rows of `data` (binary vectors) of the bound above, estimated with
    /// `samples` up-pass samples per row, given ln Z of the top RBM (`log_z_top`).
    pub fn log_prob_lower_bound<R: Rng + ?Sized>(
        &self,
        data: ArrayView2<f32>,
        log_z_top: f64,
        samples: usize,
        rng: &mut R,
    ) -> Result<f64> {
        self.check_input(&data)?;
        let binary = self.layers().iter().all(|l| {
            l.visible_units.is_binary() && l.hidden_units.is_binary() && l.lateral.is_none()
        });
        if !binary {
            return Err(EngineError::invalid(
                "model",
                "the bound is implemented for nets of binary units only",
            ));
        }
        if self.top().label_units > 0 {
            return Err(EngineError::invalid(
                "model",
                "the bound needs a top RBM without label units",
            ));
        }
        if data.nrows() == 0 || samples == 0 {
            return Err(EngineError::Shape("no examples or no samples".into()));
        }
        let below = self.layers().len() - 1;
        let mut total = 0.0f64;
        for chunk in data.axis_chunks_iter(Axis(0), 1000) {
            let chunk = chunk.to_owned();
            // q(h_1 | v) and its entropy are the same for every sample of this chunk.
            let first = self.posterior(0, chunk.view());
            for _ in 0..samples {
                let mut x = chunk.clone();
                let mut sum = vec![0.0f64; chunk.nrows()];
                for l in 0..below {
                    let higher;
                    let (q, entropies) = if l == 0 {
                        (&first.0, &first.1)
                    } else {
                        higher = self.posterior(l, x.view());
                        (&higher.0, &higher.1)
                    };
                    let mut h = Array2::zeros(q.dim());
                    math::sample_bernoulli(rng, q.view(), h.view_mut());
                    let ll = self.log_likelihood_below(l, &h, &x);
                    for ((s, ll), e) in sum.iter_mut().zip(ll).zip(entropies) {
                        *s += ll + e;
                    }
                    x = h;
                }
                let f = self.top().free_energy(x.view());
                for (s, f) in sum.iter_mut().zip(f.iter()) {
                    *s += -(*f as f64) - log_z_top;
                }
                total += sum.iter().sum::<f64>();
            }
        }
        Ok(total / (data.nrows() * samples) as f64)
    }

    /// q(h_l | x) of layer `l`'s recognition pass and its entropy, one value per row.
    fn posterior(&self, l: usize, x: ArrayView2<f32>) -> (Array2<f32>, Vec<f64>) {
        let q = self.layers()[l].hidden_probs(x);
        let entropies = q
            .rows()
            .into_iter()
            .map(|row| entropy(row.iter().copied()))
            .collect();
        (q, entropies)
    }

    /// ln p(x | h) of layer `l`'s generative (top-down) distribution, one value per row:
    /// Σ_i x_i a_i − softplus(a_i) with logits a = hWᵀ + b (exact for binary x).
    fn log_likelihood_below(&self, l: usize, h: &Array2<f32>, x: &Array2<f32>) -> Vec<f64> {
        let layer = &self.layers()[l];
        let weights = if self.is_untied() {
            self.generative(l)
        } else {
            layer.weights.view()
        };
        let mut logits = Array2::zeros((h.nrows(), layer.n_visible()));
        math::matmul(logits.view_mut(), false, h.view(), weights.t(), 1.0);
        logits
            .rows()
            .into_iter()
            .zip(x.rows())
            .map(|(a, x)| {
                a.iter()
                    .zip(layer.visible_bias.iter())
                    .zip(x.iter())
                    .map(|((&a, &b), &x)| {
                        let a = (a + b) as f64;
                        x as f64 * a - math::softplus64(a)
                    })
                    .sum()
            })
            .collect()
    }
}

/// Entropy in nats of independent Bernoulli units with these probabilities.
fn entropy(p: impl Iterator<Item = f32>) -> f64 {
    p.map(|p| {
        let p = p as f64;
        let term = |x: f64| if x > 0.0 { -x * x.ln() } else { 0.0 };
        term(p) + term(1.0 - p)
    })
    .sum()
}
