//! Discriminative fine-tuning: mini-batch gradient descent with momentum on the cross-entropy
//! of the unrolled network, optionally with dropout (Srivastava et al. 2014, "inverted": kept
//! units are scaled by 1/keep during training, so the weights need no rescaling at test time).

use std::time::Instant;

use ndarray::{Array1, Array2, ArrayView2, Axis, Zip};
use rand::Rng;

use super::config::BackpropConfig;
use super::net::{Classifier, Dense};
use super::run::{FinetuneRun, FinetuneState};
use crate::engine::dbn::{argmax_rows, error_rate};
use crate::engine::error::{EngineError, Result};
use crate::engine::math::{fill_uniform, matmul, sigmoid_bias_rows, softmax_bias_rows};
use crate::engine::observer::{Control, EpochMetrics, Phase};
use crate::engine::rbm::shuffle;
use crate::engine::EngineRng;

/// Buffers of one mini-batch: activations, dropout scales, deltas and gradients.
pub(crate) struct Workspace {
    /// acts[0] is the input batch, acts[l + 1] the output of layer l: [batch, units].
    acts: Vec<Array2<f32>>,
    /// Dropout scales (0 or 1/keep) of acts[0..L-1] when dropout is on.
    masks: Vec<Option<Array2<f32>>>,
    /// deltas[l]: ∂loss/∂(pre-activation of layer l), [batch, units].
    deltas: Vec<Array2<f32>>,
    pub grad_w: Vec<Array2<f32>>,
    pub grad_b: Vec<Array1<f32>>,
}

impl Workspace {
    pub fn new(net: &Classifier, batch: usize, input_keep: f32, hidden_keep: f32) -> Self {
        let layers = net.layers();
        let mut sizes = vec![net.n_inputs()];
        sizes.extend(layers.iter().map(|l| l.weights.ncols()));
        let last = layers.len();
        Workspace {
            acts: sizes.iter().map(|&s| Array2::zeros((batch, s))).collect(),
            masks: (0..last)
                .map(|i| {
                    let keep = if i == 0 { input_keep } else { hidden_keep };
                    (keep < 1.0).then(|| Array2::zeros((batch, sizes[i])))
                })
                .collect(),
            deltas: sizes[1..]
                .iter()
                .map(|&s| Array2::zeros((batch, s)))
                .collect(),
            grad_w: layers
                .iter()
                .map(|l| Array2::zeros(l.weights.dim()))
                .collect(),
            grad_b: layers.iter().map(|l| Array1::zeros(l.bias.len())).collect(),
        }
    }

    /// The batch's inputs, to be filled before [`Workspace::forward_backward`].
    pub fn input_mut(&mut self) -> ndarray::ArrayViewMut2<'_, f32> {
        self.acts[0].view_mut()
    }

    /// Forward pass, then the gradients of the mean cross-entropy with respect to the
    /// weights and biases of layers `first..` (the layers below keep stale gradients).
    /// Returns (sum of cross-entropies, misclassified examples).
    pub fn forward_backward<R: Rng + ?Sized>(
        &mut self,
        net: &Classifier,
        labels: &[u8],
        first: usize,
        keep: (f32, f32),
        rng: &mut R,
    ) -> (f64, usize) {
        let layers = net.layers();
        let last = layers.len() - 1;
        let batch = self.acts[0].nrows();
        for (l, layer) in layers.iter().enumerate() {
            if let Some(mask) = &mut self.masks[l] {
                let p = if l == 0 { keep.0 } else { keep.1 };
                let m = mask.as_slice_mut().expect("standard layout");
                fill_uniform(rng, m);
                m.iter_mut()
                    .for_each(|u| *u = if *u < p { 1.0 / p } else { 0.0 });
                self.acts[l] *= &*mask;
            }
            let (below, above) = self.acts.split_at_mut(l + 1);
            let z = &mut above[0];
            matmul(
                z.view_mut(),
                false,
                below[l].view(),
                layer.weights.view(),
                1.0,
            );
            if l == last {
                softmax_bias_rows(z.view_mut(), layer.bias.view());
            } else {
                sigmoid_bias_rows(z.view_mut(), layer.bias.view());
            }
        }
        // Softmax with cross-entropy: δ = (p − y) / batch.
        let out = &self.acts[last + 1];
        let errors = argmax_rows(out.view())
            .iter()
            .zip(labels)
            .filter(|&(&best, &y)| best != y as usize)
            .count();
        let mut loss = 0.0f64;
        let delta = &mut self.deltas[last];
        for (r, (&y, p)) in labels.iter().zip(out.rows()).enumerate() {
            let y = y as usize;
            loss -= (p[y].max(1e-30) as f64).ln();
            for (k, (&pk, d)) in p.iter().zip(delta.row_mut(r)).enumerate() {
                *d = (pk - f32::from(k == y)) / batch as f32;
            }
        }
        for l in (first..=last).rev() {
            matmul(
                self.grad_w[l].view_mut(),
                false,
                self.acts[l].t(),
                self.deltas[l].view(),
                1.0,
            );
            self.grad_b[l] = self.deltas[l].sum_axis(Axis(0));
            if l == first {
                break;
            }
            // δ_{l-1} = (δ_l W_lᵀ) ⊙ σ'(z_{l-1}), where acts[l] = σ(z_{l-1})·scale.
            let (lower, upper) = self.deltas.split_at_mut(l);
            let below = &mut lower[l - 1];
            matmul(
                below.view_mut(),
                false,
                upper[0].view(),
                layers[l].weights.t(),
                1.0,
            );
            match &self.masks[l] {
                None => Zip::from(below)
                    .and(&self.acts[l])
                    .for_each(|d, &a| *d *= a * (1.0 - a)),
                Some(mask) => {
                    Zip::from(below)
                        .and(&self.acts[l])
                        .and(mask)
                        .for_each(|d, &a, &m| {
                            let s = if m > 0.0 { a / m } else { 0.0 };
                            *d *= m * s * (1.0 - s);
                        })
                }
            }
        }
        (loss, errors)
    }
}

/// Fine-tunes `net` on `x` ([n, n_inputs]) with `labels`, drawing the example order and the
/// dropout masks from `rng`. Returns the metrics of every epoch.
pub fn train_backprop(
    net: &mut Classifier,
    x: ArrayView2<f32>,
    labels: &[u8],
    cfg: &BackpropConfig,
    run: &mut FinetuneRun,
    rng: &mut EngineRng,
) -> Result<Vec<EpochMetrics>> {
    cfg.validate("finetune")?;
    let classes = net.classes();
    if x.ncols() != net.n_inputs() || labels.len() != x.nrows() {
        return Err(EngineError::Shape(format!(
            "{} examples of {} values with {} labels for a network of {} inputs",
            x.nrows(),
            x.ncols(),
            labels.len(),
            net.n_inputs()
        )));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
        return Err(EngineError::invalid(
            "labels",
            format!("label {bad} is not below {classes}"),
        ));
    }
    let n = x.nrows();
    let batch = cfg.batch_size.min(n).max(1);
    let batches = n / batch;
    let last = net.layers().len() - 1;
    let mut ws = Workspace::new(net, batch, cfg.input_keep, cfg.hidden_keep);
    let zeros = net
        .layers()
        .iter()
        .map(|l| Dense {
            weights: Array2::zeros(l.weights.dim()),
            bias: Array1::zeros(l.bias.len()),
        })
        .collect::<Vec<_>>();
    let state = match run.resume.take() {
        Some(state) => {
            state.check(n, cfg.epochs, &zeros)?;
            state
        }
        None => FinetuneState::fresh(n, zeros),
    };
    let (first_epoch, mut inc) = (state.next_epoch, state.increments);
    let mut order: Vec<usize> = state.order.iter().map(|&i| i as usize).collect();
    let mut batch_labels = vec![0u8; batch];
    let mut history = Vec::with_capacity(cfg.epochs);
    for epoch in first_epoch..cfg.epochs {
        let started = Instant::now();
        shuffle(&mut order, rng);
        let (lr, momentum) = (cfg.learning_rate_at(epoch), cfg.momentum(epoch));
        let first = if epoch < cfg.top_only_epochs { last } else { 0 };
        let (mut loss, mut errors) = (0.0f64, 0usize);
        for b in 0..batches {
            let rows = &order[b * batch..(b + 1) * batch];
            for (r, &i) in rows.iter().enumerate() {
                ws.input_mut().row_mut(r).assign(&x.row(i));
                batch_labels[r] = labels[i];
            }
            let (l, e) = ws.forward_backward(
                net,
                &batch_labels,
                first,
                (cfg.input_keep, cfg.hidden_keep),
                rng,
            );
            loss += l;
            errors += e;
            // inc = momentum·inc − ε(∇ + λW); W += inc.
            for (i, layer) in net.layers_mut().iter_mut().enumerate().skip(first) {
                layer.momentum_step(
                    &mut inc[i],
                    (&ws.grad_w[i], &ws.grad_b[i]),
                    lr,
                    momentum,
                    cfg.weight_decay,
                );
            }
            let done = (b + 1) * batch;
            let progress = run.progress(epoch, cfg.epochs, b + 1, batches, done, n, started);
            if run.observer.on_batch(&progress) == Control::Stop {
                return Err(EngineError::Cancelled);
            }
        }
        let seen = (batches * batch).max(1) as f64;
        let cross_entropy = loss / seen;
        if !cross_entropy.is_finite() {
            return Err(EngineError::Diverged(format!(
                "cross-entropy {cross_entropy} in epoch {}",
                epoch + 1
            )));
        }
        let (validation_error, validation_cross_entropy) = match run.validation {
            Some((xv, yv)) => {
                let (e, ce) = evaluate(net, xv, yv)?;
                (Some(e), Some(ce))
            }
            None => (None, None),
        };
        let seconds = started.elapsed().as_secs_f64();
        let metrics = EpochMetrics {
            phase: Phase::Finetune,
            layer: last,
            epoch: epoch + 1,
            recon_error_train: None,
            recon_error_validation: None,
            free_energy_gap: None,
            validation_error,
            train_error: Some(errors as f64 / seen),
            cross_entropy: Some(cross_entropy),
            validation_cross_entropy,
            log_prob_bound: None,
            momentum,
            seconds,
            examples_per_sec: seen / seconds.max(1e-9),
        };
        let progress = run.progress(epoch, cfg.epochs, batches, batches, n, n, started);
        history.push(metrics.clone());
        let mut stop = run.observer.on_epoch(&progress, &metrics) == Control::Stop;
        if let Some(base) = run.base {
            let state = FinetuneState {
                next_epoch: epoch + 1,
                order: order.iter().map(|&i| i as u32).collect(),
                increments: inc.clone(),
                chains: None,
            };
            let model = || base.clone().with_classifier(net.clone());
            stop |= run.checkpoint(model, state, &history, rng)? == Control::Stop;
        }
        if stop {
            return Err(EngineError::Cancelled);
        }
    }
    Ok(history)
}

/// (error rate, mean cross-entropy) of `net` on labelled examples.
pub fn evaluate(net: &Classifier, x: ArrayView2<f32>, labels: &[u8]) -> Result<(f64, f64)> {
    let probs = net.classify(x)?;
    let loss: f64 = probs
        .rows()
        .into_iter()
        .zip(labels)
        .map(|(p, &y)| -(p[y as usize].max(1e-30) as f64).ln())
        .sum();
    Ok((
        error_rate(probs.view(), labels),
        loss / labels.len().max(1) as f64,
    ))
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;

    use super::*;
    use crate::engine::finetune::Dense;
    use crate::engine::math::fill_normal;

    fn tiny_net(rng: &mut crate::engine::EngineRng) -> Classifier {
        let mut layer = |i: usize, o: usize| {
            let mut w = Array2::zeros((i, o));
            fill_normal(rng, w.as_slice_mut().unwrap(), 0.0, 0.7);
            let mut b = Array1::zeros(o);
            fill_normal(rng, b.as_slice_mut().unwrap(), 0.0, 0.3);
            Dense {
                weights: w,
                bias: b,
            }
        };
        Classifier::new(vec![layer(6, 5), layer(5, 4), layer(4, 3)]).unwrap()
    }

    /// Backpropagated gradients of the mean cross-entropy against central differences
    /// (f64 loss of an f32 network: step 1e-2, agreement to 1 % or 1e-4).
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = crate::engine::rng_from_seed(3);
        let mut net = tiny_net(&mut rng);
        let mut x = Array2::zeros((4, 6));
        fill_uniform(&mut rng, x.as_slice_mut().unwrap());
        let labels = [0u8, 2, 1, 2];
        let mut ws = Workspace::new(&net, 4, 1.0, 1.0);
        ws.input_mut().assign(&x);
        ws.forward_backward(&net, &labels, 0, (1.0, 1.0), &mut rng);
        let h = 1e-2f32;
        let loss = |net: &Classifier| evaluate(net, x.view(), &labels).unwrap().1;
        for l in 0..3 {
            let (rows, cols) = net.layers()[l].weights.dim();
            for (r, c) in [(0, 0), (rows - 1, cols - 1), (rows / 2, cols / 2)] {
                let w0 = net.layers()[l].weights[[r, c]];
                net.layers_mut()[l].weights[[r, c]] = w0 + h;
                let up = loss(&net);
                net.layers_mut()[l].weights[[r, c]] = w0 - h;
                let down = loss(&net);
                net.layers_mut()[l].weights[[r, c]] = w0;
                let numeric = (up - down) / (2.0 * h as f64);
                let analytic = ws.grad_w[l][[r, c]] as f64;
                assert!(
                    (numeric - analytic).abs() <= 1e-4 + 0.01 * analytic.abs(),
                    "layer {l} weight ({r},{c}): numeric {numeric}, backprop {analytic}"
                );
            }
            let b0 = net.layers()[l].bias[0];
            net.layers_mut()[l].bias[0] = b0 + h;
            let up = loss(&net);
            net.layers_mut()[l].bias[0] = b0 - h;
            let down = loss(&net);
            net.layers_mut()[l].bias[0] = b0;
            let numeric = (up - down) / (2.0 * h as f64);
            let analytic = ws.grad_b[l][0] as f64;
            assert!(
                (numeric - analytic).abs() <= 1e-4 + 0.01 * analytic.abs(),
                "layer {l} bias: {numeric} vs {analytic}"
            );
        }
    }

    /// With dropout, a unit that was dropped passes no gradient to the weights below it.
    #[test]
    fn dropped_units_pass_no_gradient() {
        let mut rng = crate::engine::rng_from_seed(5);
        let net = tiny_net(&mut rng);
        let mut ws = Workspace::new(&net, 1, 1.0, 0.5);
        ws.input_mut().fill(0.5);
        ws.forward_backward(&net, &[1], 0, (1.0, 0.5), &mut rng);
        let mask = ws.masks[1].as_ref().unwrap();
        for j in 0..5 {
            let dropped = mask[[0, j]] == 0.0;
            assert_eq!(ws.acts[1][[0, j]] == 0.0, dropped);
            if dropped {
                assert!(ws.grad_w[0].column(j).iter().all(|&g| g == 0.0));
            }
        }
        assert!(mask.iter().all(|&m| m == 0.0 || m == 2.0));
    }
}
