//! Run-time selection of AVX2+FMA code paths, and branch-free float approximations that the
//! compiler vectorises inside them.
//!
//! Each kernel is written once as an `#[inline(always)]` body generic over [`Fma`]; the
//! dispatcher instantiates it inside a `#[target_feature(enable = "avx2,fma")]` function when
//! the CPU has those features, and as portable code otherwise. The choice is fixed per machine,
//! so results are reproducible on one machine.

use std::sync::OnceLock;

/// Whether the CPU running us has AVX-512F (checked once).
pub fn has_avx512() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f") && has_avx2_fma()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// The kernel set this CPU runs: `avx512`, `avx2` or `portable`. Results for a given seed
/// and thread count are reproducible within one kernel set.
pub fn kernel_set() -> &'static str {
    if has_avx512() {
        "avx512"
    } else if has_avx2_fma() {
        "avx2"
    } else {
        "portable"
    }
}

/// Whether the CPU running us has AVX2 and FMA (checked once).
pub(crate) fn has_avx2_fma() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// How a kernel forms `a * b + c`: fused where the hardware has it, plainly elsewhere
/// (a software `fma` call would be far slower than two roundings).
pub(crate) trait Fma {
    /// Output columns a register-tiled kernel keeps in accumulators: as many as fit the
    /// vector registers with room to spare (8 zmm, 8 ymm, or a few scalars' worth).
    const TILE: usize;
    fn fma(a: f32, b: f32, c: f32) -> f32;
}

/// AVX-512: fused multiply-add, 32 vector registers of 16 floats.
pub(crate) struct Fused512;
/// AVX2: fused multiply-add, 16 vector registers of 8 floats.
pub(crate) struct Fused;
/// Portable code.
pub(crate) struct Plain;

impl Fma for Fused512 {
    const TILE: usize = 128;
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

impl Fma for Fused {
    const TILE: usize = 64;
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

impl Fma for Plain {
    const TILE: usize = 16;
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Defines `fn $name($args)` that runs `$body::<F>` with `F = Fused` inside an AVX-512 or an
/// AVX2+FMA function when the CPU has one, else with `F = Plain`.
macro_rules! dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    $body::<$crate::engine::math::simd::Fused512>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) $(-> $ret)? {
                    $body::<$crate::engine::math::simd::Fused>($($arg),*)
                }
                if $crate::engine::math::simd::has_avx512() {
                    // SAFETY: the CPU was checked for AVX-512F, AVX2 and FMA just above.
                    return unsafe { wide($($arg),*) };
                }
                if $crate::engine::math::simd::has_avx2_fma() {
                    // SAFETY: the CPU was checked for AVX2 and FMA just above.
                    return unsafe { fast($($arg),*) };
                }
            }
            $body::<$crate::engine::math::simd::Plain>($($arg),*)
        }
    };
}
pub(crate) use dispatch;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// e^x for x in [-87, 88] (clamped outside), relative error about 2 ulp: range reduction
/// x = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial for e^r (the classic Cephes `expf`
/// coefficients), and 2^n built from the exponent bits. Branch-free so that it vectorises.
#[inline(always)]
pub(crate) fn exp<F: Fma>(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = F::fma(x, LOG2E, ROUND_MAGIC);
    let n = t - ROUND_MAGIC;
    let n_int = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = F::fma(n, -LN2_HI, x);
    let r = F::fma(n, -LN2_LO, r);
    let mut p = 1.987_569_1e-4;
    p = F::fma(p, r, 1.398_199_9e-3);
    p = F::fma(p, r, 8.333_452e-3);
    p = F::fma(p, r, 4.166_579_6e-2);
    p = F::fma(p, r, 1.666_666_5e-1);
    p = F::fma(p, r, 0.5);
    let y = F::fma(p, r * r, r + 1.0);
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    y * scale
}

/// ln(z) for z in (1, 2] (all that softplus needs), relative error about 1e-7: the Cephes
/// `logf` polynomial on the mantissa folded into [sqrt(1/2), sqrt(2)).
#[inline(always)]
pub(crate) fn ln_1_to_2<F: Fma>(z: f32) -> f32 {
    let e = (z > std::f32::consts::SQRT_2) as u8 as f32;
    let m = z * (1.0 - 0.5 * e);
    let x = m - 1.0;
    let mut p = 7.037_683_6e-2;
    p = F::fma(p, x, -1.151_461e-1);
    p = F::fma(p, x, 1.167_699_9e-1);
    p = F::fma(p, x, -1.242_014_1e-1);
    p = F::fma(p, x, 1.424_932_3e-1);
    p = F::fma(p, x, -1.666_805_8e-1);
    p = F::fma(p, x, 2.000_071_5e-1);
    p = F::fma(p, x, -2.499_999_4e-1);
    p = F::fma(p, x, 3.333_333e-1);
    let x2 = x * x;
    let mut y = x * x2 * p;
    y = F::fma(x2, -0.5, y);
    F::fma(e, std::f32::consts::LN_2, x + y)
}

/// Probabilities below this are flushed to exactly 0. Left alone they reach the subnormal
/// range (σ(−88) ≈ 6e-39), and subnormal operands make every later product that touches them
/// take microcode assists on Intel cores: the top RBM's epochs slowed from 7 s to 15 s as
/// units learned to switch off firmly. A probability of 1e-30 is 0 for every purpose here.
pub(crate) const TINY_PROBABILITY: f32 = 1e-30;

/// ln(z) for finite z >= 1 (up to f32::MAX): the exponent bits give k with z = 2^k · m,
/// m in [1, 2), and ln z = k ln 2 + ln m.
#[inline(always)]
pub(crate) fn ln_at_least_1<F: Fma>(z: f32) -> f32 {
    let bits = z.to_bits();
    let k = ((bits >> 23) as i32 - 127) as f32;
    let m = f32::from_bits((bits & 0x007F_FFFF) | 0x3F80_0000);
    F::fma(k, std::f32::consts::LN_2, ln_1_to_2::<F>(m))
}

/// The logistic function 1 / (1 + e^-x), flushed to 0 below [`TINY_PROBABILITY`].
#[inline(always)]
pub(crate) fn sigmoid<F: Fma>(x: f32) -> f32 {
    let s = 1.0 / (1.0 + exp::<F>(-x));
    if s < TINY_PROBABILITY {
        0.0
    } else {
        s
    }
}

/// softplus(x) = ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|), stable for any x.
///
/// ln(1 + y) for y = e^-|x| is ln(u) + (y − (u − 1)) with u = 1 + y rounded: the second term
/// restores what rounding 1 + y dropped (to first order ln(u + δ) = ln u + δ/u, and u ≈ 1
/// wherever δ matters), so tiny y keep full relative precision with no division or branch.
#[inline(always)]
pub(crate) fn softplus<F: Fma>(x: f32) -> f32 {
    let y = exp::<F>(-x.abs());
    let u = 1.0 + y;
    let log1p = ln_1_to_2::<F>(u) + (y - (u - 1.0));
    x.max(0.0) + log1p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        // Oracle: the standard library's correctly rounded-ish expf, on a dense grid.
        let mut worst = 0.0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let want = (x as f64).exp();
            let got = exp::<Plain>(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.013;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
    }

    #[test]
    fn softplus_matches_definition() {
        // Oracle: ln(1 + e^x) in f64 via ln_1p (1 + e^-30 would drop digits even in f64).
        let mut worst = 0.0f64;
        let mut x = -30.0f32;
        while x < 30.0 {
            let want = (x as f64).exp().ln_1p();
            let got = softplus::<Plain>(x) as f64;
            worst = worst.max((got - want).abs() / want);
            x += 0.007;
        }
        assert!(worst < 2e-6, "worst error {worst}");
        assert_eq!(softplus::<Plain>(200.0), 200.0);
        assert!(softplus::<Plain>(-200.0) >= 0.0);
    }

    #[test]
    fn sigmoid_is_bounded_and_symmetric() {
        for &x in &[-1000.0f32, -50.0, -3.0, 0.0, 2.5, 50.0, 1000.0] {
            let s = sigmoid::<Plain>(x);
            assert!((0.0..=1.0).contains(&s), "sigmoid({x}) = {s}");
            assert!((s + sigmoid::<Plain>(-x) - 1.0).abs() < 1e-6);
        }
    }
}
