//! Annealed importance sampling (Neal 2001) of an RBM's partition function, as Salakhutdinov
//! & Murray (2008) apply it: from a base-rate model with no weights, whose Z is known, through
//! a sequence of RBMs whose energies are scaled by β from 0 to 1, to the RBM itself. With
//! ln Z, the log-probability of data is exact: ln p(v) = −F(v) − ln Z, in nats.
//!
//! The intermediate distributions, for β in [0, 1]:
//!   p*_β(v) = exp((1−β)·b_Aᵀv + β·bᵀv) · Π_j (1 + exp(β·(c_j + vᵀW_j)))
//! which at β = 0 is the base-rate model (with the hidden units free: Z_0 = 2^H Π_i (1 + e^{b_A,i}))
//! and at β = 1 the RBM. Each step's transition is one Gibbs sweep of the RBM at that β.
//!
//! A semi-restricted machine (lateral weights L between the visible units) anneals the same
//! way with the extra factor exp(β·½vᵀLv); its visible units are then drawn one after another
//! given the others (a sequential sweep), since they are no longer independent given h.

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, Axis};
use rand::Rng;
use rayon::prelude::*;

use super::Rbm;
use crate::engine::error::{EngineError, Result};
use crate::engine::math;

/// How many chains and which inverse temperatures.
#[derive(Debug, Clone, PartialEq)]
pub struct AisConfig {
    /// Independent annealing runs (the paper: 100).
    pub runs: usize,
    /// Inverse temperatures, increasing from 0 to 1 inclusive.
    pub betas: Vec<f64>,
}

impl AisConfig {
    /// The paper's schedule shape with `steps` intermediate distributions: 1/29 of them evenly
    /// in [0, 0.5), 8/29 in [0.5, 0.9), 20/29 in [0.9, 1] (500, 4,000 and 10,000 at the
    /// paper's 14,500).
    pub fn schedule(runs: usize, steps: usize) -> Self {
        let steps = steps.max(3);
        let first = (steps / 29).max(1);
        let second = (steps * 8 / 29).max(1);
        let third = steps - first - second;
        let mut betas = Vec::with_capacity(steps + 1);
        let mut span = |from: f64, to: f64, n: usize, last: bool| {
            let end = if last { n + 1 } else { n };
            betas.extend((0..end).map(|i| from + (to - from) * i as f64 / n as f64));
        };
        span(0.0, 0.5, first, false);
        span(0.5, 0.9, second, false);
        span(0.9, 1.0, third, true);
        AisConfig { runs, betas }
    }

    /// The paper's: 100 runs over 14,500 intermediate distributions.
    pub fn paper() -> Self {
        Self::schedule(100, 14_500)
    }

    fn validate(&self) -> Result<()> {
        if self.runs == 0 || self.runs > 100_000 {
            return Err(EngineError::invalid("runs", "must be in 1..=100000"));
        }
        let b = &self.betas;
        let increasing = b.windows(2).all(|w| w[0] < w[1]);
        if b.len() < 2 || b[0] != 0.0 || *b.last().unwrap_or(&0.0) != 1.0 || !increasing {
            return Err(EngineError::invalid(
                "betas",
                "must increase strictly from 0 to 1, with at least two values",
            ));
        }
        Ok(())
    }
}

/// An estimate of ln Z with its spread.
#[derive(Debug, Clone, PartialEq)]
pub struct AisEstimate {
    /// ln Ẑ = ln Z_0 + ln(mean of the importance weights).
    pub log_z: f64,
    /// ln(Ẑ ∓ 3 standard errors of the mean weight): the paper's interval. The lower end is
    /// −∞ when three standard errors exceed the mean.
    pub log_z_low: f64,
    pub log_z_high: f64,
    /// ln Z of the base-rate model.
    pub log_z_base: f64,
    /// ln of each run's importance weight.
    pub log_weights: Vec<f64>,
}

/// How the runs' own estimates of ln Z spread: each run's ln Z_0 + ln w_i, and how many runs
/// the weights effectively count as (a few dominant weights mean an unreliable mean).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunSpread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    /// Standard deviation of the runs' estimates.
    pub std: f64,
    /// (Σw)² / Σw²: the number of equal weights with the same spread.
    pub effective_runs: f64,
}

impl AisEstimate {
    /// The spread of the runs behind the estimate.
    pub fn spread(&self) -> RunSpread {
        let mut runs: Vec<f64> = self
            .log_weights
            .iter()
            .map(|w| self.log_z_base + w)
            .collect();
        runs.sort_by(f64::total_cmp);
        let n = runs.len().max(1) as f64;
        let mean = runs.iter().sum::<f64>() / n;
        let std =
            (runs.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
        let top = runs.last().copied().unwrap_or(0.0);
        let w: Vec<f64> = runs.iter().map(|r| (r - top).exp()).collect();
        let (sum, squares) = (w.iter().sum::<f64>(), w.iter().map(|x| x * x).sum::<f64>());
        RunSpread {
            min: runs.first().copied().unwrap_or(f64::NAN),
            median: runs.get(runs.len() / 2).copied().unwrap_or(f64::NAN),
            max: top,
            std,
            effective_runs: if squares > 0.0 {
                sum * sum / squares
            } else {
                0.0
            },
        }
    }
}

/// Visible biases of the base-rate model: the log-odds of each unit being on in `data`,
/// smoothed (as if every unit had been seen on and off in 0.5 % of extra examples) so that
/// units that never turn on keep a finite bias.
pub fn base_rate_biases(data: ArrayView2<f32>) -> Array1<f32> {
    let n = data.nrows() as f64;
    let extra = (n * 0.005).max(1.0);
    data.sum_axis(Axis(0)).mapv(|on| {
        let p = (on as f64 + extra) / (n + 2.0 * extra);
        (p / (1.0 - p)).ln() as f32
    })
}

/// ln p*_β(v) for each row, given A = b_Aᵀv, D = bᵀv and X = vᵀW (no hidden bias).
fn log_unnormalised(
    beta: f64,
    a: &[f64],
    d: &[f64],
    x: ArrayView2<f32>,
    hidden_bias: &[f32],
    scaled: &mut Array2<f32>,
) -> Vec<f64> {
    let b = beta as f32;
    scaled.assign(&x);
    scaled.mapv_inplace(|v| v * b);
    let shift: Vec<f32> = hidden_bias.iter().map(|c| c * b).collect();
    scaled
        .axis_iter(Axis(0))
        .into_par_iter()
        .zip(a.par_iter().zip(d.par_iter()))
        .map(|(row, (&a, &d))| {
            let hidden = math::softplus_sum_shifted(row.as_slice().expect("owned row"), &shift);
            (1.0 - beta) * a + beta * d + hidden as f64
        })
        .collect()
}

/// Estimates ln Z of `rbm` (which must have no label units) by annealing from the base-rate
/// model with visible biases `base_bias`.
pub fn estimate_log_z<R: Rng + ?Sized>(
    rbm: &Rbm,
    base_bias: ArrayView1<f32>,
    config: &AisConfig,
    rng: &mut R,
) -> Result<AisEstimate> {
    config.validate()?;
    if rbm.label_units > 0 || !rbm.visible_units.is_binary() || !rbm.hidden_units.is_binary() {
        return Err(EngineError::invalid(
            "model",
            "AIS here is for RBMs of binary units; this one has label or Gaussian units",
        ));
    }
    let (nv, nh) = rbm.weights.dim();
    if base_bias.len() != nv || base_bias.iter().any(|b| !b.is_finite()) {
        return Err(EngineError::Shape(format!(
            "base-rate biases: {} finite values needed, got {}",
            nv,
            base_bias.len()
        )));
    }
    let m = config.runs;
    let log_z_base = nh as f64 * std::f64::consts::LN_2
        + base_bias
            .iter()
            .map(|&b| math::softplus64(b as f64))
            .sum::<f64>();

    // v_0 from the base-rate model.
    let mut v = Array2::<f32>::zeros((m, nv));
    let base_probs = Array2::from_shape_fn((m, nv), |(_, i)| sigmoid64(base_bias[i] as f64) as f32);
    math::sample_bernoulli(rng, base_probs.view(), v.view_mut());

    let hidden_bias = rbm.hidden_bias.to_vec();
    let mut x = Array2::<f32>::zeros((m, nh));
    let mut scaled = Array2::<f32>::zeros((m, nh));
    let mut h = Array2::<f32>::zeros((m, nh));
    let mut vp = Array2::<f32>::zeros((m, nv));
    let mut log_w = vec![0.0f64; m];
    let betas = &config.betas;
    for k in 1..betas.len() {
        let (prev, beta) = (betas[k - 1], betas[k]);
        math::x_times_w(v.view(), rbm.weights.view(), x.view_mut());
        let a = row_dots(v.view(), base_bias);
        let d = row_dots(v.view(), rbm.visible_bias.view());
        let before = log_unnormalised(prev, &a, &d, x.view(), &hidden_bias, &mut scaled);
        let after = log_unnormalised(beta, &a, &d, x.view(), &hidden_bias, &mut scaled);
        // ½vᵀLv, which the annealed distributions weigh by β (zero without lateral weights).
        let lateral = rbm.lateral_energy(v.view());
        for (((w, after), before), e) in log_w.iter_mut().zip(after).zip(before).zip(lateral) {
            *w += after - before - (beta - prev) * e as f64;
        }
        if k + 1 == betas.len() {
            break;
        }
        // One Gibbs sweep at β: h ~ σ(β(c + vW)), v ~ σ((1−β)b_A + β(b + Wh)). `scaled`
        // holds βvW from the weight above.
        let b = beta as f32;
        let hb: Array1<f32> = rbm.hidden_bias.mapv(|c| c * b);
        math::sigmoid_bias_rows(scaled.view_mut(), hb.view());
        math::sample_bernoulli(rng, scaled.view(), h.view_mut());
        math::matmul(vp.view_mut(), false, h.view(), rbm.weights.t(), b);
        let vb: Array1<f32> = base_bias
            .iter()
            .zip(rbm.visible_bias.iter())
            .map(|(&ba, &bb)| (1.0 - b) * ba + b * bb)
            .collect();
        match &rbm.lateral {
            None => {
                math::sigmoid_bias_rows(vp.view_mut(), vb.view());
                math::sample_bernoulli(rng, vp.view(), v.view_mut());
            }
            Some(l) => {
                vp += &vb;
                lateral_sweep(rng, vp.view(), l.view(), b, v.view_mut());
            }
        }
    }
    if log_w.iter().any(|w| !w.is_finite()) {
        return Err(EngineError::Diverged(
            "AIS weights are not finite: the model's weights are too large".into(),
        ));
    }
    // Mean and standard error of the weights, relative to the largest for stability.
    let top = log_w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let rel: Vec<f64> = log_w.iter().map(|w| (w - top).exp()).collect();
    let mean = rel.iter().sum::<f64>() / m as f64;
    let var = if m > 1 {
        rel.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (m - 1) as f64
    } else {
        0.0
    };
    let se = (var / m as f64).sqrt();
    let offset = log_z_base + top;
    Ok(AisEstimate {
        log_z: offset + mean.ln(),
        log_z_low: if mean > 3.0 * se {
            offset + (mean - 3.0 * se).ln()
        } else {
            f64::NEG_INFINITY
        },
        log_z_high: offset + (mean + 3.0 * se).ln(),
        log_z_base,
        log_weights: log_w,
    })
}

/// Binary images with each pixel on with its intensity as probability, drawn once (as the
/// binarised MNIST of the literature). images: [n, pixels], values in [0, 1].
pub fn sample_binary<R: Rng + ?Sized>(images: ArrayView2<f32>, rng: &mut R) -> Array2<f32> {
    let mut out = Array2::zeros(images.dim());
    let images = images.as_standard_layout();
    math::sample_bernoulli(rng, images.view(), out.view_mut());
    out
}

/// ln Z of an RBM and the average log-probability of its training and test data.
#[derive(Debug, Clone, PartialEq)]
pub struct LogProbReport {
    pub estimate: AisEstimate,
    pub train: f64,
    pub test: Option<f64>,
}

impl LogProbReport {
    /// The ±3 s.e. range of a log-probability measured with this ln Z. A larger ln Z lowers
    /// it, so the ends swap; the upper end is +∞ when ln Z's lower end is unbounded.
    pub fn range(&self, log_prob: f64) -> (f64, f64) {
        let e = &self.estimate;
        (
            log_prob - (e.log_z_high - e.log_z),
            log_prob - (e.log_z_low - e.log_z),
        )
    }

    /// As named metrics for a model card; an unbounded end of a range is left out.
    pub fn metrics(&self) -> Vec<(String, f64)> {
        let e = &self.estimate;
        let mut out = vec![
            ("ais_log_z".to_string(), e.log_z),
            ("ais_log_z_high".to_string(), e.log_z_high),
            ("train_log_prob".to_string(), self.train),
        ];
        if e.log_z_low.is_finite() {
            out.push(("ais_log_z_low".to_string(), e.log_z_low));
        }
        if let Some(t) = self.test {
            let (low, high) = self.range(t);
            out.push(("test_log_prob".to_string(), t));
            out.push(("test_log_prob_low".to_string(), low));
            if high.is_finite() {
                out.push(("test_log_prob_high".to_string(), high));
            }
        }
        out
    }
}

/// Estimates ln Z of `rbm` from the base rates of `train` and measures the average
/// log-probability of `train` and `test` (binary rows).
pub fn log_prob_report<R: Rng + ?Sized>(
    rbm: &Rbm,
    train: ArrayView2<f32>,
    test: Option<ArrayView2<f32>>,
    config: &AisConfig,
    rng: &mut R,
) -> Result<LogProbReport> {
    rbm.check_visible(&train)?;
    let base = base_rate_biases(train);
    let estimate = estimate_log_z(rbm, base.view(), config, rng)?;
    let train_lp = mean_log_prob(rbm, train, estimate.log_z)?;
    let test = test
        .map(|t| mean_log_prob(rbm, t, estimate.log_z))
        .transpose()?;
    Ok(LogProbReport {
        estimate,
        train: train_lp,
        test,
    })
}

/// Mean ln p(v) over the rows of `data` (binary vectors), in nats, given ln Z.
pub fn mean_log_prob(rbm: &Rbm, data: ArrayView2<f32>, log_z: f64) -> Result<f64> {
    rbm.check_visible(&data)?;
    if data.nrows() == 0 {
        return Err(EngineError::Shape("no examples".into()));
    }
    let mut total = 0.0f64;
    for start in (0..data.nrows()).step_by(1000) {
        let end = (start + 1000).min(data.nrows());
        let f = rbm.free_energy(data.slice(s![start..end, ..]));
        total += f.iter().map(|&f| -(f as f64)).sum::<f64>();
    }
    Ok(total / data.nrows() as f64 - log_z)
}

/// One sequential sweep over the visible units of every run at inverse temperature β:
/// v_i ~ σ(input_i + β Σ_k L_ik v_k) in turn, where `input` holds the rest of each unit's
/// input. The uniform draws come first, so the runs can go in parallel and stay reproducible.
fn lateral_sweep<R: Rng + ?Sized>(
    rng: &mut R,
    input: ArrayView2<f32>,
    lateral: ArrayView2<f32>,
    beta: f32,
    mut v: ndarray::ArrayViewMut2<f32>,
) {
    let mut u = Array2::<f32>::zeros(v.dim());
    math::fill_uniform(rng, u.as_slice_mut().expect("owned"));
    v.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(input.axis_iter(Axis(0)).into_par_iter())
        .zip(u.axis_iter(Axis(0)).into_par_iter())
        .for_each(|((mut v, input), u)| {
            for i in 0..v.len() {
                let a = input[i] + beta * lateral.row(i).dot(&v);
                v[i] = (u[i] < sigmoid64(a as f64) as f32) as u8 as f32;
            }
        });
}

fn row_dots(v: ArrayView2<f32>, b: ArrayView1<f32>) -> Vec<f64> {
    v.axis_iter(Axis(0))
        .map(|row| row.iter().zip(b).map(|(&x, &y)| (x * y) as f64).sum())
        .collect()
}

fn sigmoid64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_has_the_papers_shape() {
        let c = AisConfig::paper();
        assert_eq!(c.betas.len(), 14_501);
        assert_eq!((c.betas[0], *c.betas.last().unwrap()), (0.0, 1.0));
        assert!(c.betas.windows(2).all(|w| w[0] < w[1]));
        let below = |x: f64| c.betas.iter().filter(|&&b| b < x).count();
        assert_eq!((below(0.5), below(0.9)), (500, 4500));
        assert!(c.validate().is_ok());
        let bad = AisConfig {
            runs: 10,
            betas: vec![0.0, 0.7, 0.6, 1.0],
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn base_rates_are_finite_log_odds() {
        let data = ndarray::array![[1.0f32, 0.0, 1.0], [1.0, 0.0, 0.0]];
        let b = base_rate_biases(data.view());
        assert!(b.iter().all(|x| x.is_finite()));
        assert!(b[0] > 0.0 && b[1] < 0.0 && b[2].abs() < 1e-6, "{b}");
    }
}
