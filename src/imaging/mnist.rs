//! Any picture of a digit brought to MNIST's form, the way MNIST itself was made (LeCun et
//! al.): ink light on dark, cropped to the ink, scaled with anti-aliasing so the longer side
//! is 20 pixels keeping the aspect ratio, and placed in a 28×28 field so that the centre of
//! mass of the ink falls on the centre. A 28×28 picture is taken to be in that form already
//! and only has its polarity and background fixed: redoing the normalisation on MNIST's own
//! images moves them by a pixel here and there, which cost the digit model 1.1 points of test
//! error (bench/RESULTS.md).

use super::Gray;

pub const MNIST_SIDE: usize = 28;
/// Side of the box the digit is scaled into.
const BOX: usize = 20;
/// Ink below this fraction of the strongest ink does not count for the bounding box.
const INK_THRESHOLD: f32 = 0.05;

/// The 784 MNIST-style pixel intensities (row-major, 0 = background, 1 = full ink) of `img`.
/// A picture without ink gives all zeros.
pub fn to_mnist(img: &Gray) -> Vec<f32> {
    let ink = ink_map(img);
    let (w, h) = (img.width, img.height);
    let peak = ink.iter().copied().fold(0.0f32, f32::max);
    let mut out = vec![0.0f32; MNIST_SIDE * MNIST_SIDE];
    if peak <= 0.0 {
        return out;
    }
    if (w, h) == (MNIST_SIDE, MNIST_SIDE) {
        return ink.iter().map(|v| v.clamp(0.0, 1.0)).collect();
    }
    // Bounding box of the ink.
    let (mut x0, mut x1, mut y0, mut y1) = (w, 0, h, 0);
    for y in 0..h {
        for x in 0..w {
            if ink[y * w + x] > INK_THRESHOLD * peak {
                (x0, x1, y0, y1) = (x0.min(x), x1.max(x + 1), y0.min(y), y1.max(y + 1));
            }
        }
    }
    let (cw, ch) = (x1 - x0, y1 - y0);
    let scale = BOX as f32 / cw.max(ch) as f32;
    let tw = ((cw as f32 * scale).round() as usize).clamp(1, BOX);
    let th = ((ch as f32 * scale).round() as usize).clamp(1, BOX);
    let crop: Vec<f32> = (y0..y1)
        .flat_map(|y| ink[y * w + x0..y * w + x1].iter().map(move |&v| v / peak))
        .collect();
    let small = resample(&crop, cw, ch, tw, th);
    // Centre of mass, with pixel centres at i + 0.5.
    let (mut mass, mut my, mut mx) = (0.0f64, 0.0f64, 0.0f64);
    for y in 0..th {
        for x in 0..tw {
            let v = small[y * tw + x] as f64;
            mass += v;
            my += v * (y as f64 + 0.5);
            mx += v * (x as f64 + 0.5);
        }
    }
    let half = MNIST_SIDE as f64 / 2.0;
    let (oy, ox) = if mass > 0.0 {
        (
            (half - my / mass).round() as isize,
            (half - mx / mass).round() as isize,
        )
    } else {
        (
            ((MNIST_SIDE - th) / 2) as isize,
            ((MNIST_SIDE - tw) / 2) as isize,
        )
    };
    for y in 0..th {
        for x in 0..tw {
            let (ty, tx) = (y as isize + oy, x as isize + ox);
            if (0..MNIST_SIDE as isize).contains(&ty) && (0..MNIST_SIDE as isize).contains(&tx) {
                out[ty as usize * MNIST_SIDE + tx as usize] = small[y * tw + x].clamp(0.0, 1.0);
            }
        }
    }
    out
}

/// Ink intensity per pixel: the picture inverted when it is dark on light, with the
/// background level removed. The background is the median of the border pixels, which
/// strokes touching the edge do not move.
fn ink_map(img: &Gray) -> Vec<f32> {
    let (w, h) = (img.width, img.height);
    let mut border: Vec<f32> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .filter(|&(x, y)| x == 0 || y == 0 || x + 1 == w || y + 1 == h)
        .map(|(x, y)| img.pixels[y * w + x])
        .collect();
    border.sort_by(f32::total_cmp);
    let background_grey = border.get(border.len() / 2).copied().unwrap_or(0.0);
    let dark_on_light = background_grey > 0.5;
    let ink = |v: f32| if dark_on_light { 1.0 - v } else { v };
    let background = ink(background_grey);
    img.pixels
        .iter()
        .map(|&v| (ink(v) - background).max(0.0))
        .collect()
}

/// Separable resampling of a `w`×`h` image to `tw`×`th` with a tent filter widened by the
/// reduction factor when shrinking (anti-aliasing).
fn resample(src: &[f32], w: usize, h: usize, tw: usize, th: usize) -> Vec<f32> {
    let across = weights(w, tw);
    let down = weights(h, th);
    let mut mid = vec![0.0f32; h * tw];
    for y in 0..h {
        for (x, taps) in across.iter().enumerate() {
            mid[y * tw + x] = taps.iter().map(|&(i, wt)| wt * src[y * w + i]).sum();
        }
    }
    let mut out = vec![0.0f32; th * tw];
    for (y, taps) in down.iter().enumerate() {
        for x in 0..tw {
            out[y * tw + x] = taps.iter().map(|&(i, wt)| wt * mid[i * tw + x]).sum();
        }
    }
    out
}

/// For each output index, the input indices and normalised weights that make it.
fn weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = n_out as f32 / n_in as f32;
    let support = (1.0 / scale).max(1.0);
    (0..n_out)
        .map(|o| {
            let centre = (o as f32 + 0.5) / scale - 0.5;
            let lo = (centre - support).floor().max(0.0) as usize;
            let hi = ((centre + support).ceil() as usize).min(n_in - 1);
            let mut taps: Vec<(usize, f32)> = (lo..=hi)
                .map(|i| (i, (1.0 - (i as f32 - centre).abs() / support).max(0.0)))
                .filter(|&(_, wt)| wt > 0.0)
                .collect();
            if taps.is_empty() {
                taps.push((centre.round().clamp(0.0, (n_in - 1) as f32) as usize, 1.0));
            }
            let total: f32 = taps.iter().map(|t| t.1).sum();
            taps.iter_mut().for_each(|t| t.1 /= total);
            taps
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(width: usize, height: usize, f: impl Fn(usize, usize) -> f32) -> Gray {
        Gray {
            width,
            height,
            pixels: (0..height)
                .flat_map(|y| (0..width).map(move |x| (x, y)))
                .map(|(x, y)| f(x, y))
                .collect(),
        }
    }

    fn bbox(img: &[f32]) -> (usize, usize, usize, usize) {
        let on: Vec<(usize, usize)> = (0..MNIST_SIDE * MNIST_SIDE)
            .filter(|&i| img[i] > 0.05)
            .map(|i| (i % MNIST_SIDE, i / MNIST_SIDE))
            .collect();
        let xs = on.iter().map(|p| p.0);
        let ys = on.iter().map(|p| p.1);
        (
            xs.clone().min().unwrap(),
            xs.max().unwrap(),
            ys.clone().min().unwrap(),
            ys.max().unwrap(),
        )
    }

    #[test]
    fn a_dark_bar_on_white_becomes_a_centred_light_bar_20_pixels_tall() {
        // A 10-wide, 100-tall black bar on a 300x300 white page, off-centre.
        let img = picture(300, 300, |x, y| {
            if (40..50).contains(&x) && (150..250).contains(&y) {
                0.0
            } else {
                1.0
            }
        });
        let out = to_mnist(&img);
        let (x0, x1, y0, y1) = bbox(&out);
        // Longer side scaled to 20 (rows 4..=23), the 2-pixel-wide bar centred on column 14.
        assert_eq!((y0, y1), (4, 23));
        assert!(x1 - x0 <= 3 && x0 >= 12 && x1 <= 15, "columns {x0}..={x1}");
        assert!(out.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }

    #[test]
    fn a_28_by_28_picture_keeps_its_place_and_only_changes_polarity() {
        // Ink off-centre in a 28x28 picture, dark on white: inverted, not moved.
        let img = picture(28, 28, |x, y| if x < 3 && y < 5 { 0.25 } else { 1.0 });
        let out = to_mnist(&img);
        for (i, v) in out.iter().enumerate() {
            let expected = if i % 28 < 3 && i / 28 < 5 { 0.75 } else { 0.0 };
            assert!((v - expected).abs() < 1e-6, "pixel {i}: {v}");
        }
    }

    #[test]
    fn a_centred_digit_scaled_up_comes_back_nearly_unchanged() {
        // A 20x20 blob centred in 28x28 with light-on-dark ink, drawn at 56x56.
        let small = picture(28, 28, |x, y| {
            let (dx, dy) = (x as f32 - 13.5, y as f32 - 13.5);
            if dx.abs() < 10.0 && dy.abs() < 10.0 {
                1.0 - (dx * dx + dy * dy) / 200.0
            } else {
                0.0
            }
        });
        let img = picture(56, 56, |x, y| small.pixels[(y / 2) * 28 + x / 2]);
        let out = to_mnist(&img);
        let diff: f32 = out
            .iter()
            .zip(&small.pixels)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / small.pixels.iter().sum::<f32>();
        assert!(diff < 0.1, "relative change {diff}");
    }

    #[test]
    fn a_blank_picture_has_no_ink() {
        let out = to_mnist(&picture(50, 40, |_, _| 1.0));
        assert!(out.iter().all(|&v| v == 0.0));
        let out = to_mnist(&picture(1, 1, |_, _| 0.3));
        assert!(out.iter().all(|&v| v == 0.0));
    }
}
