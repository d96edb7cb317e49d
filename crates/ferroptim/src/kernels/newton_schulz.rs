//! Muon's Newton–Schulz orthogonalisation, rounded as torch 2.15 rounds it on
//! CPU: in bfloat16.
//!
//! torch (`_zeropower_via_newtonschulz`) copies the matrix to bfloat16,
//! transposes it to be wide, divides it by its norm, then runs
//!
//! ```text
//! A ← X·Xᵀ
//! B ← b·A + c·A·A
//! X ← a·X + B·X
//! ```
//!
//! `ns_steps` times. Every matrix product there is a bfloat16 `addmm`: the
//! products of bfloat16 values are exact, summed in float32, combined with
//! the `beta·C` term in float32 and rounded to bfloat16 once. Here the sums
//! are taken in `f64`, which holds every such sum of bfloat16 products
//! exactly, then rounded to float32 and combined in float32: torch's result
//! whenever its float32 sum is the exactly rounded one, which is what the
//! parity fixtures find (all of their elements match).
//!
//! As those sums are exact, their order is free: each dot product runs in
//! eight lanes (vectorised, with runtime AVX2 dispatch), and the rows of a
//! large product are shared across [`crate::set_num_threads`] threads, with
//! the same bits on any number of them.

use half::bf16;

use super::simd;
use crate::parallel::for_rows;

/// Rounds to bfloat16 (to nearest, ties to even) and widens back.
#[inline]
fn bf(x: f32) -> f32 {
    bf16::from_f32(x).to_f32()
}

/// `Σ aᵢ·bᵢ`, exact for bfloat16 inputs of moderate length, rounded to float32.
///
/// Each product of two bfloat16 values is exact in `f64`, and so are the
/// sums, so the order of the additions does not matter: they run in eight
/// independent lanes, which vectorise.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut lanes = [0.0f64; LANES];
    let (body_a, body_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (rest_a, rest_b) = (body_a.remainder(), body_b.remainder());
    for (x, y) in body_a.zip(body_b) {
        for l in 0..LANES {
            lanes[l] += f64::from(x[l]) * f64::from(y[l]);
        }
    }
    for (lane, (&x, &y)) in lanes.iter_mut().zip(rest_a.iter().zip(rest_b)) {
        *lane += f64::from(x) * f64::from(y);
    }
    lanes.iter().sum::<f64>() as f32
}

/// What a matrix product does with each `dot` before rounding it to bfloat16.
#[derive(Clone, Copy)]
enum Epilogue<'a> {
    /// `bf(dot)`: A = X·Xᵀ.
    Round,
    /// `bf(b·Aᵢⱼ + c·dot)`: B = b·A + c·A·A.
    Poly { b: f32, c: f32, gram: &'a [f32] },
    /// `bf(a·Xᵢⱼ + dot)`, `Xᵢⱼ` being the output's own value: X = a·X + B·X.
    Axpy { a: f32 },
}

/// `out[i, j] = epilogue(Σₗ lhs[i, l]·rhs[j, l])` for `out` of `n` columns,
/// the rows of `lhs` and `rhs` both `k` long (`rhs` is the right-hand
/// matrix transposed). Whole rows of `out` are shared across threads; each
/// element is computed the same way on any number of them.
fn products(lhs: &[f32], rhs: &[f32], k: usize, out: &mut [f32], n: usize, epilogue: Epilogue) {
    if out.is_empty() {
        return; // an empty matrix: nothing to multiply, and no zero-length rows to cut
    }
    let work = out.len() * k;
    for_rows(out, n, work, |first, rows| {
        products_serial(lhs, rhs, k, rows, first, n, epilogue)
    });
}

simd! {
fn products_serial(
    lhs: &[f32],
    rhs: &[f32],
    k: usize,
    out: &mut [f32],
    first_row: usize,
    n: usize,
    epilogue: Epilogue,
) {
    let rows = out
        .chunks_exact_mut(n)
        .zip(lhs.chunks_exact(k).skip(first_row));
    for (i, (out, lhs)) in rows.enumerate() {
        let i = first_row + i;
        for (j, (o, rhs)) in out.iter_mut().zip(rhs.chunks_exact(k)).enumerate() {
            let d = dot(lhs, rhs);
            *o = bf(match epilogue {
                Epilogue::Round => d,
                Epilogue::Poly { b, c, gram } => b * gram[i * n + j] + c * d,
                Epilogue::Axpy { a } => a * *o + d,
            });
        }
    }
}}

/// Newton–Schulz's matrices, kept between steps so a step allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct NewtonSchulz {
    x: Vec<f32>,
    xt: Vec<f32>,
    gram: Vec<f32>,
    update: Vec<f32>,
    out: Vec<f32>,
}

impl NewtonSchulz {
    /// Orthogonalises the `rows × cols` matrix whose element `i` (row-major)
    /// is `input(i)`, and returns the result (bfloat16 values, in `f32`) in
    /// the same layout.
    pub fn orthogonalize(
        &mut self,
        rows: usize,
        cols: usize,
        input: impl Fn(usize) -> f64,
        (a, b, c): (f64, f64, f64),
        steps: usize,
        eps: f64,
    ) -> &[f32] {
        // torch works on the wide orientation: r ≤ k.
        let transpose = rows > cols;
        let (r, k) = if transpose {
            (cols, rows)
        } else {
            (rows, cols)
        };
        for buf in [&mut self.x, &mut self.xt, &mut self.out] {
            buf.resize(r * k, 0.0);
        }
        for buf in [&mut self.gram, &mut self.update] {
            buf.resize(r * r, 0.0);
        }
        // `grad.to(torch.bfloat16)`: a float64 goes through float32 first, as in c10.
        for i in 0..rows {
            for j in 0..cols {
                let v = bf(input(i * cols + j) as f32);
                let at = if transpose { j * k + i } else { i * k + j };
                self.x[at] = v;
            }
        }
        // `X.div_(X.norm().clamp(min=eps))`, each result rounded to bfloat16.
        let sum_sq: f64 = self.x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let norm = bf(sum_sq.sqrt() as f32);
        let floor = eps as f32;
        let norm = if norm.is_nan() || norm >= floor {
            norm
        } else {
            bf(floor)
        };
        for v in &mut self.x {
            *v = bf(*v / norm);
        }
        let (a, b, c) = (a as f32, b as f32, c as f32);
        for _ in 0..steps {
            // A = X·Xᵀ.
            products(&self.x, &self.x, k, &mut self.gram, r, Epilogue::Round);
            // B = b·A + c·A·A (A·A by rows of A, as A is symmetric).
            let poly = Epilogue::Poly {
                b,
                c,
                gram: &self.gram,
            };
            products(&self.gram, &self.gram, r, &mut self.update, r, poly);
            // X = a·X + B·X, with Xᵀ laid out by rows for the products.
            for i in 0..r {
                for j in 0..k {
                    self.xt[j * r + i] = self.x[i * k + j];
                }
            }
            products(
                &self.update,
                &self.xt,
                r,
                &mut self.x,
                k,
                Epilogue::Axpy { a },
            );
        }
        for i in 0..rows {
            for j in 0..cols {
                self.out[i * cols + j] = if transpose {
                    self.x[j * k + i]
                } else {
                    self.x[i * k + j]
                };
            }
        }
        &self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TORCH: (f64, f64, f64) = (3.4445, -4.7750, 2.0315);

    /// The singular values of the result, via its Gram matrix's eigenvalues (2 × 2 case).
    fn singular_values_2x2(o: &[f32]) -> (f64, f64) {
        let o: Vec<f64> = o.iter().map(|&v| f64::from(v)).collect();
        let (p, q, s) = (
            o[0] * o[0] + o[1] * o[1],
            o[0] * o[2] + o[1] * o[3],
            o[2] * o[2] + o[3] * o[3],
        );
        let (mean, diff) = ((p + s) / 2.0, (((p - s) / 2.0).powi(2) + q * q).sqrt());
        ((mean + diff).sqrt(), (mean - diff).sqrt())
    }

    #[test]
    fn singular_values_are_pushed_towards_one_and_values_are_bfloat16() {
        let m = [3.0, 1.0, 0.5, 2.0];
        let o = NewtonSchulz::default()
            .orthogonalize(2, 2, |i| m[i], TORCH, 5, 1e-7)
            .to_vec();
        let (hi, lo) = singular_values_2x2(&o);
        // torch's coefficients aim at singular values in roughly (0.7, 1.2).
        assert!(
            (0.6..1.3).contains(&hi) && (0.6..1.3).contains(&lo),
            "{hi} {lo}"
        );
        assert!(o.iter().all(|&v| bf(v) == v));
    }

    #[test]
    fn tall_matrices_are_the_transpose_of_their_wide_twin() {
        let wide = [1.0, -2.0, 0.5, 3.0, 0.25, -1.0];
        let tall = [1.0, 3.0, -2.0, 0.25, 0.5, -1.0];
        let mut ns = NewtonSchulz::default();
        let w = ns.orthogonalize(2, 3, |i| wide[i], TORCH, 5, 1e-7).to_vec();
        let t = ns.orthogonalize(3, 2, |i| tall[i], TORCH, 5, 1e-7).to_vec();
        for i in 0..2 {
            for j in 0..3 {
                assert_eq!(w[i * 3 + j], t[j * 2 + i]);
            }
        }
    }

    /// A sequence of values that needs every bit of a bfloat16.
    fn bf16_values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| bf(((i.wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 97.0 - 10.0))
            .collect()
    }

    #[test]
    fn the_laned_dot_is_the_exact_sum_in_any_order() {
        for n in [0, 1, 7, 8, 9, 64, 333] {
            let (a, b) = (bf16_values(n, 1), bf16_values(n, 2));
            let forward: f64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum();
            let backward: f64 = a
                .iter()
                .zip(&b)
                .rev()
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum();
            assert_eq!(forward, backward, "n = {n}: the reference sum is not exact");
            assert_eq!(dot(&a, &b), forward as f32, "n = {n}");
        }
    }

    #[test]
    fn threads_do_not_change_a_bit() {
        // 96 x 120: each product is above the work that gets shared.
        let m = bf16_values(96 * 120, 3);
        let mut ns = NewtonSchulz::default();
        let one = ns
            .orthogonalize(96, 120, |i| f64::from(m[i]), TORCH, 5, 1e-7)
            .to_vec();
        crate::set_num_threads(3).unwrap();
        let three = ns
            .orthogonalize(96, 120, |i| f64::from(m[i]), TORCH, 5, 1e-7)
            .to_vec();
        crate::set_num_threads(1).unwrap();
        assert!(one
            .iter()
            .zip(&three)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(one.iter().any(|&v| v != 0.0));
    }

    #[test]
    fn a_zero_matrix_stays_zero() {
        let mut ns = NewtonSchulz::default();
        let o = ns.orthogonalize(2, 3, |_| 0.0, TORCH, 5, 1e-7);
        assert!(o.iter().all(|&v| v == 0.0));
    }
}
