//! One LBFGS `step`: torch's loop, over flat vectors of the parameters' dtype.

use std::collections::VecDeque;

use super::strong_wolfe::strong_wolfe;
use super::{Lbfgs, LbfgsState, LineSearch};
use crate::error::{Error, Result};
use crate::kernels::flat::{abs_max, abs_sum, axpy, dot};
use crate::slot::{GradRef, ParamSlot, SlotElement};
use crate::tensor::{numel, Element, Tensor};

/// The state as vectors of `T` while a step runs.
struct Work<T> {
    d: Option<Vec<T>>,
    t: f64,
    old_dirs: VecDeque<Vec<T>>,
    old_stps: VecDeque<Vec<T>>,
    ro: VecDeque<T>,
    h_diag: Option<T>,
    prev_flat_grad: Option<Vec<T>>,
    prev_loss: f64,
}

fn vector<T: Element>(t: &Tensor) -> Result<Vec<T>> {
    Ok(t.as_slice::<T>()?.to_vec())
}

impl<T: Element> Work<T> {
    fn load(s: &LbfgsState) -> Result<Self> {
        Ok(Work {
            d: s.d.as_ref().map(vector).transpose()?,
            t: s.t,
            old_dirs: s.old_dirs.iter().map(vector).collect::<Result<_>>()?,
            old_stps: s.old_stps.iter().map(vector).collect::<Result<_>>()?,
            ro: s.ro.iter().map(|&r| T::from_f64(r)).collect(),
            h_diag: s.h_diag.map(T::from_f64),
            prev_flat_grad: s.prev_flat_grad.as_ref().map(vector).transpose()?,
            prev_loss: s.prev_loss,
        })
    }

    fn store(self, s: &mut LbfgsState) -> Result<()> {
        let tensor = |v: Vec<T>| {
            let n = v.len();
            Tensor::from_vec(v, &[n])
        };
        s.d = self.d.map(tensor).transpose()?;
        s.t = self.t;
        s.old_dirs = self
            .old_dirs
            .into_iter()
            .map(tensor)
            .collect::<Result<_>>()?;
        s.old_stps = self
            .old_stps
            .into_iter()
            .map(tensor)
            .collect::<Result<_>>()?;
        s.ro = self.ro.into_iter().map(T::to_f64).collect();
        s.h_diag = self.h_diag.map(T::to_f64);
        s.prev_flat_grad = self.prev_flat_grad.map(tensor).transpose()?;
        s.prev_loss = self.prev_loss;
        Ok(())
    }
}

/// torch's `_gather_flat_grad`: every gradient in one vector (zeros for a
/// parameter without one), negated when maximizing.
fn gather<T: SlotElement + Element, P: ParamSlot>(params: &[P], maximize: bool) -> Result<Vec<T>> {
    let total = params.iter().map(|p| numel(&p.shape())).sum();
    let mut flat = vec![T::ZERO; total];
    let mut offset = 0;
    for (index, p) in params.iter().enumerate() {
        let out = &mut flat[offset..offset + numel(&p.shape())];
        offset += out.len();
        // Runs only if the parameter has a gradient; its values are not changed.
        p.update_in_place(index, &mut |_, data| {
            match data.typed::<T>()?.1 {
                GradRef::Dense(g) => out.copy_from_slice(g),
                GradRef::Sparse(g) => {
                    let (rows, values) = g.coalesced::<T>()?;
                    let width = values.len().checked_div(rows.len()).unwrap_or(0);
                    for (k, &r) in rows.iter().enumerate() {
                        let src = &values[k * width..(k + 1) * width];
                        out[r * width..(r + 1) * width].copy_from_slice(src);
                    }
                }
            }
            Ok(())
        })?;
    }
    if maximize {
        flat.iter_mut().for_each(|g| *g = -*g);
    }
    Ok(flat)
}

/// Runs `f` on each parameter's values with its slice of a flat vector.
fn zip_values<T: Element, P: ParamSlot>(
    params: &[P],
    mut f: impl FnMut(&mut [T], std::ops::Range<usize>),
) -> Result<()> {
    let mut offset = 0;
    for (index, p) in params.iter().enumerate() {
        p.with_value_mut(index, &mut |data| {
            let x = data.into_slice::<T>()?;
            f(x, offset..offset + x.len());
            offset += x.len();
            Ok(())
        })?;
    }
    Ok(())
}

/// torch's `_add_grad`: `x ← x + t·d` (`add_(alpha=t)`, a fused multiply-add).
fn add_grad<T: Element, P: ParamSlot>(params: &[P], t: f64, d: &[T]) -> Result<()> {
    let t = T::from_f64(t);
    zip_values(params, |x, at| axpy(x, t, &d[at]))
}

/// Every parameter's values, one after another (torch's `_clone_param`).
fn values<T: Element, P: ParamSlot>(params: &[P]) -> Result<Vec<T>> {
    let mut flat = Vec::new();
    zip_values(params, |x: &mut [T], _| flat.extend_from_slice(x))?;
    Ok(flat)
}

/// Puts back values taken by [`values`] (torch's `_set_param`).
fn set_values<T: Element, P: ParamSlot>(params: &[P], flat: &[T]) -> Result<()> {
    zip_values(params, |x, at| x.copy_from_slice(&flat[at]))
}

/// Runs one step; if the closure fails, the parameters and the state are
/// left as they were before the step.
pub(super) fn step<T: SlotElement + Element, P: ParamSlot>(
    opt: &mut Lbfgs<P>,
    closure: &mut dyn FnMut() -> Result<f64>,
) -> Result<f64> {
    let params = opt.params();
    let start = values::<T, P>(&params)?;
    let result = iterate::<T, P>(opt, &params, closure);
    if result.is_err() {
        set_values(&params, &start)?;
    }
    result
}

fn iterate<T: SlotElement + Element, P: ParamSlot>(
    opt: &mut Lbfgs<P>,
    params: &[P],
    closure: &mut dyn FnMut() -> Result<f64>,
) -> Result<f64> {
    let o = opt.options().clone();
    let max_eval = o.max_eval.unwrap_or(super::default_max_eval(o.max_iter));
    let sign = if o.maximize { -1.0 } else { 1.0 };
    let tolerance_grad = T::from_f64(o.tolerance_grad);
    let mut state = opt.state.clone().unwrap_or_default();
    let mut w = Work::<T>::load(&state)?;

    let orig_loss = closure()?;
    let mut loss = sign * orig_loss;
    let mut current_evals = 1;
    state.func_evals += 1;
    let mut flat_grad = gather::<T, P>(params, o.maximize)?;
    if abs_max(&flat_grad) <= tolerance_grad {
        opt.state = Some(state);
        return Ok(orig_loss);
    }

    let mut n_iter = 0;
    while n_iter < o.max_iter {
        n_iter += 1;
        state.n_iter += 1;
        // The direction: steepest descent first, then the two-loop recursion.
        let d = if state.n_iter == 1 {
            w.old_dirs.clear();
            w.old_stps.clear();
            w.ro.clear();
            w.h_diag = None;
            flat_grad.iter().map(|&g| -g).collect()
        } else {
            let missing = |key| {
                Error::state(
                    format!("state[0].{key}"),
                    "missing after the first iteration",
                )
            };
            let prev_grad = w
                .prev_flat_grad
                .as_ref()
                .ok_or_else(|| missing("prev_flat_grad"))?;
            let d = w.d.as_ref().ok_or_else(|| missing("d"))?;
            let y: Vec<T> = flat_grad
                .iter()
                .zip(prev_grad)
                .map(|(&g, &p)| g - p)
                .collect();
            let t = T::from_f64(w.t);
            let s: Vec<T> = d.iter().map(|&x| x * t).collect();
            let ys = dot(&y, &s);
            if ys > T::from_f64(1e-10) {
                if w.old_dirs.len() == o.history_size {
                    w.old_dirs.pop_front();
                    w.old_stps.pop_front();
                    w.ro.pop_front();
                }
                w.h_diag = Some(ys / dot(&y, &y));
                w.old_dirs.push_back(y);
                w.old_stps.push_back(s);
                w.ro.push_back(T::ONE / ys);
            }
            let num_old = w.old_dirs.len();
            let mut al = vec![T::ZERO; num_old];
            let mut q: Vec<T> = flat_grad.iter().map(|&g| -g).collect();
            for i in (0..num_old).rev() {
                al[i] = dot(&w.old_stps[i], &q) * w.ro[i];
                axpy(&mut q, -al[i], &w.old_dirs[i]);
            }
            if let Some(h) = w.h_diag {
                q.iter_mut().for_each(|x| *x = *x * h);
            }
            for (((y, s), &ro), &al) in w.old_dirs.iter().zip(&w.old_stps).zip(&w.ro).zip(&al) {
                let be_i = dot(y, &q) * ro;
                axpy(&mut q, al - be_i, s);
            }
            q
        };
        w.prev_flat_grad = Some(flat_grad.clone());
        w.prev_loss = loss;
        // The first step ever is scaled by the gradient's size.
        w.t = if state.n_iter == 1 {
            let recip = T::ONE / abs_sum(&flat_grad);
            if recip < T::ONE {
                (recip * T::from_f64(o.lr)).to_f64()
            } else {
                o.lr
            }
        } else {
            o.lr
        };
        let gtd = dot(&flat_grad, &d);
        let d = &*w.d.insert(d);
        if gtd > T::from_f64(-o.tolerance_change) {
            break; // not a descent direction
        }

        let mut ls_func_evals = 0;
        let mut opt_cond = false;
        if o.line_search_fn == Some(LineSearch::StrongWolfe) {
            let x_init = values::<T, P>(params)?;
            let mut evaluate = |t: f64| -> Result<(f64, Vec<T>)> {
                add_grad(params, t, d)?;
                let result =
                    closure().and_then(|f| Ok((sign * f, gather::<T, P>(params, o.maximize)?)));
                set_values(params, &x_init)?;
                result
            };
            let found = strong_wolfe(
                &mut evaluate,
                w.t,
                d,
                loss,
                &flat_grad,
                gtd.to_f64(),
                o.tolerance_change,
                max_eval.saturating_sub(current_evals),
            )?;
            (loss, flat_grad, w.t, ls_func_evals) = (found.loss, found.grad, found.t, found.evals);
            add_grad(params, w.t, d)?;
            opt_cond = abs_max(&flat_grad) <= tolerance_grad;
        } else {
            add_grad(params, w.t, d)?;
            if n_iter != o.max_iter {
                loss = sign * closure()?;
                flat_grad = gather::<T, P>(params, o.maximize)?;
                opt_cond = abs_max(&flat_grad) <= tolerance_grad;
                ls_func_evals = 1;
            }
        }
        current_evals += ls_func_evals;
        state.func_evals += ls_func_evals as u64;

        if n_iter == o.max_iter || current_evals >= max_eval || opt_cond {
            break;
        }
        let t = T::from_f64(w.t);
        let step = d.iter().fold(T::ZERO, |m, &x| m.nan_max((x * t).abs()));
        if step <= T::from_f64(o.tolerance_change)
            || (loss - w.prev_loss).abs() < o.tolerance_change
        {
            break;
        }
    }
    w.store(&mut state)?;
    opt.state = Some(state);
    Ok(orig_loss)
}
