//! torch's line search for LBFGS (`torch/optim/lbfgs.py`, after minFunc):
//! bracketing by cubic interpolation, then zoom, until the strong Wolfe
//! conditions hold:
//!
//! ```text
//! f(x + t·d) ≤ f(x) + c₁·t·gᵀd          (sufficient decrease)
//! |g(x + t·d)ᵀd| ≤ −c₂·gᵀd              (curvature)
//! ```
//!
//! The scalars are Python floats in torch; directional derivatives are
//! tensors of the parameters' dtype, rounded to it here. Branch for branch
//! the same as torch, so the number of evaluations is torch's.

use crate::error::Result;
use crate::kernels::flat::{abs_max, dot};
use crate::kernels::{py_max, py_min};
use crate::tensor::Element;

const C1: f64 = 1e-4;
const C2: f64 = 0.9;

/// The minimiser of the cubic through `(x1, f1)` and `(x2, f2)` with slopes
/// `g1`, `g2`, clamped to `bounds` (default: between the two points); the
/// bounds' midpoint when the cubic has no minimum.
pub(crate) fn cubic_interpolate(
    (x1, f1, g1): (f64, f64, f64),
    (x2, f2, g2): (f64, f64, f64),
    bounds: Option<(f64, f64)>,
) -> f64 {
    let (lo, hi) = bounds.unwrap_or(if x1 <= x2 { (x1, x2) } else { (x2, x1) });
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let d2_square = d1 * d1 - g1 * g2;
    if d2_square >= 0.0 {
        let d2 = d2_square.sqrt();
        let min_pos = if x1 <= x2 {
            x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
        } else {
            x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
        };
        py_min(py_max(min_pos, lo), hi)
    } else {
        (lo + hi) / 2.0
    }
}

/// One point of the search: step, loss, gradient, directional derivative.
#[derive(Clone)]
struct Point<T> {
    t: f64,
    f: f64,
    g: Vec<T>,
    gtd: f64,
}

/// What the search found: the loss and flat gradient at `x + t·d`, `t`, and
/// how many times it evaluated the objective.
pub(crate) struct Found<T> {
    pub loss: f64,
    pub grad: Vec<T>,
    pub t: f64,
    pub evals: usize,
}

/// Strong-Wolfe line search from loss `f`, gradient `g` and `gtd = gᵀd`
/// along `d`, first trying step `t`; `evaluate(t)` returns the loss and flat
/// gradient at `x + t·d` (leaving the parameters at `x`). At most `max_ls`
/// evaluations beyond the first.
#[allow(clippy::too_many_arguments)]
pub(crate) fn strong_wolfe<T: Element>(
    evaluate: &mut dyn FnMut(f64) -> Result<(f64, Vec<T>)>,
    mut t: f64,
    d: &[T],
    f: f64,
    g: &[T],
    gtd: f64,
    tolerance_change: f64,
    max_ls: usize,
) -> Result<Found<T>> {
    let d_norm = abs_max(d).to_f64();
    let sufficient_decrease = |t: f64, f_new: f64| f_new > f + C1 * t * gtd;
    let (mut f_new, mut g_new) = evaluate(t)?;
    let mut evals = 1;
    let mut gtd_new = dot(&g_new, d).to_f64();
    let mut prev = Point {
        t: 0.0,
        f,
        g: g.to_vec(),
        gtd,
    };
    let mut done = false;
    let mut ls_iter = 0;
    // Bracketing: `bracket` ends up with two points, or one satisfying the conditions.
    let mut bracket: Vec<Point<T>> = Vec::new();
    while ls_iter < max_ls {
        let here = || Point {
            t,
            f: f_new,
            g: g_new.clone(),
            gtd: gtd_new,
        };
        if sufficient_decrease(t, f_new) || (ls_iter > 1 && f_new >= prev.f) {
            bracket = vec![prev.clone(), here()];
            break;
        }
        if gtd_new.abs() <= -C2 * gtd {
            bracket = vec![here()];
            done = true;
            break;
        }
        if gtd_new >= 0.0 {
            bracket = vec![prev.clone(), here()];
            break;
        }
        let min_step = t + 0.01 * (t - prev.t);
        let max_step = t * 10.0;
        let next = cubic_interpolate(
            (prev.t, prev.f, prev.gtd),
            (t, f_new, gtd_new),
            Some((min_step, max_step)),
        );
        prev = here();
        t = next;
        (f_new, g_new) = evaluate(t)?;
        evals += 1;
        gtd_new = dot(&g_new, d).to_f64();
        ls_iter += 1;
    }
    if ls_iter == max_ls {
        // Out of evaluations: torch brackets [0, t] (the gtd of these points is never read).
        bracket = vec![
            Point {
                t: 0.0,
                f,
                g: g.to_vec(),
                gtd,
            },
            Point {
                t,
                f: f_new,
                g: g_new,
                gtd: gtd_new,
            },
        ];
    }
    // torch's `(0, 1) if f[0] <= f[-1] else (1, 0)`; a one-point bracket
    // (the conditions met at once) is that point even when its loss is NaN,
    // where torch's own index would run past it.
    let order = |b: &[Point<T>]| {
        if b.len() < 2 || b[0].f <= b[b.len() - 1].f {
            (0, 1)
        } else {
            (1, 0)
        }
    };
    let (mut low, mut high) = order(&bracket);
    let mut insuf_progress = false;
    // Zoom.
    while !done && ls_iter < max_ls {
        let (b0, b1) = (bracket[0].t, bracket[1].t);
        if (b1 - b0).abs() * d_norm < tolerance_change {
            break;
        }
        t = cubic_interpolate(
            (b0, bracket[0].f, bracket[0].gtd),
            (b1, bracket[1].f, bracket[1].gtd),
            None,
        );
        let (b_max, b_min) = (py_max(b0, b1), py_min(b0, b1));
        let eps = 0.1 * (b_max - b_min);
        if py_min(b_max - t, t - b_min) < eps {
            if insuf_progress || t >= b_max || t <= b_min {
                t = if (t - b_max).abs() < (t - b_min).abs() {
                    b_max - eps
                } else {
                    b_min + eps
                };
                insuf_progress = false;
            } else {
                insuf_progress = true;
            }
        } else {
            insuf_progress = false;
        }
        (f_new, g_new) = evaluate(t)?;
        evals += 1;
        gtd_new = dot(&g_new, d).to_f64();
        ls_iter += 1;
        let point = Point {
            t,
            f: f_new,
            g: std::mem::take(&mut g_new),
            gtd: gtd_new,
        };
        if sufficient_decrease(t, f_new) || f_new >= bracket[low].f {
            bracket[high] = point;
            (low, high) = order(&bracket);
        } else {
            if gtd_new.abs() <= -C2 * gtd {
                done = true;
            } else if gtd_new * (bracket[high].t - bracket[low].t) >= 0.0 {
                bracket[high] = bracket[low].clone();
            }
            bracket[low] = point;
        }
    }
    let best = bracket.swap_remove(low);
    Ok(Found {
        loss: best.f,
        grad: best.g,
        t: best.t,
        evals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nan_loss_is_no_panic() {
        // The first trial meets the curvature condition with a NaN loss: a
        // one-point bracket whose loss compares false with itself.
        let mut evaluate = |_t: f64| -> Result<(f64, Vec<f64>)> { Ok((f64::NAN, vec![0.0])) };
        let found = strong_wolfe(&mut evaluate, 1.0, &[1.0], 1.0, &[-1.0], -1.0, 1e-9, 25).unwrap();
        assert!(found.loss.is_nan());
        assert_eq!((found.t, found.evals), (1.0, 1));
    }

    #[test]
    fn cubic_interpolation_finds_the_minimum_of_a_cubic() {
        // f(x) = x³ − 3x has its local minimum at x = 1.
        let f = |x: f64| x * x * x - 3.0 * x;
        let g = |x: f64| 3.0 * x * x - 3.0;
        let m = cubic_interpolate((0.0, f(0.0), g(0.0)), (2.0, f(2.0), g(2.0)), None);
        assert!((m - 1.0).abs() < 1e-12, "{m}");
        // Clamped to the bounds, and the midpoint when there is no minimum.
        let m = cubic_interpolate(
            (0.0, f(0.0), g(0.0)),
            (2.0, f(2.0), g(2.0)),
            Some((1.5, 3.0)),
        );
        assert_eq!(m, 1.5);
        assert_eq!(
            cubic_interpolate((0.0, 0.0, 1.0), (1.0, 2.0 / 3.0, 1.0), None),
            0.5
        );
    }

    #[test]
    fn the_search_satisfies_the_wolfe_conditions_on_a_quadratic() {
        // f(t) = (t − 3)² along d = 1 from x = 0: f = 9, g = −6.
        let mut calls = 0;
        let mut evaluate = |t: f64| -> Result<(f64, Vec<f64>)> {
            calls += 1;
            Ok(((t - 3.0) * (t - 3.0), vec![2.0 * (t - 3.0)]))
        };
        let found = strong_wolfe(&mut evaluate, 0.1, &[1.0], 9.0, &[-6.0], -6.0, 1e-9, 25).unwrap();
        assert!(found.loss <= 9.0 + C1 * found.t * -6.0);
        assert!(found.grad[0].abs() <= C2 * 6.0);
        assert_eq!(found.evals, calls);
    }
}
