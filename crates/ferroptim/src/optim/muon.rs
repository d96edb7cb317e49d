//! Muon: momentum orthogonalised by Newton–Schulz (Jordan et al., 2024;
//! `torch.optim.Muon`), for the 2-D weights of hidden layers.
//!
//! For an `A × B` parameter, with momentum `μ`, weight decay `λ`:
//!
//! ```text
//! b ← lerp(b, g, 1 − μ)
//! u ← lerp(g, b, μ)   (nesterov)   or   u ← b
//! O ← NS(u)           ns_steps Newton–Schulz iterations with (a, b, c), in bfloat16
//! θ ← θ·(1 − lr·λ)
//! θ ← θ − lr·s(A, B)·O
//! ```
//!
//! where the scale `s` is `adjust_lr_fn`'s: `√max(1, A/B)` ("original", the
//! default), `0.2·√max(A, B)` ("match_rms_adamw") or `√(A/B)`
//! ("spectral_unclamped"). The orthogonalisation is torch's
//! `_zeropower_via_newtonschulz`, rounded to bfloat16 where torch rounds
//! (see [`NewtonSchulz`]). State: `momentum_buffer`.
//!
//! As torch, the constructor refuses parameters that are not matrices. torch
//! refuses `ns_steps >= 100` at the first step; here the constructor does.

use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, Hyperparameters};
use crate::error::{Error, Result};
use crate::kernels::{check_len, lerp, newton_schulz::NewtonSchulz};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::tensor::{Element, Tensor};
use crate::validate::check_non_negative;

/// Muon over param groups.
pub type Muon = Optim<MuonConfig>;

/// The ways `adjust_lr_fn` may scale the learning rate by the matrix's shape.
pub const ADJUST_LR_FNS: &[&str] = &["original", "match_rms_adamw", "spectral_unclamped"];

/// Muon's hyperparameters: torch's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{Muon, MuonConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![0.0f32; 4], &[2, 2])?;
/// let mut opt = Muon::new([p.clone()], MuonConfig { lr: 0.1, ..Default::default() })?;
/// p.set_grad(Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], &[2, 2])?)?;
/// opt.step()?;
/// // The identity is already orthogonal: NS maps it near itself, so θ ≈ −lr·s·I.
/// let v = p.to_vec::<f32>()?;
/// assert!(v[0] < -0.05 && v[3] < -0.05 && v[1] == 0.0 && v[2] == 0.0);
/// assert!(ferroptim::optim::build("muon", "{}", [Param::zeros::<f32>(&[3])]).is_err());
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MuonConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decoupled weight decay λ (default 0.1).
    pub weight_decay: f64,
    /// Momentum factor μ (default 0.95).
    pub momentum: f64,
    /// Nesterov momentum (default true).
    pub nesterov: bool,
    /// The quintic's coefficients `(a, b, c)` (default (3.4445, −4.7750, 2.0315)).
    pub ns_coefficients: (f64, f64, f64),
    /// Floor of the norm the matrix is divided by (default 1e-7).
    pub eps: f64,
    /// Newton–Schulz iterations, fewer than 100 (default 5).
    pub ns_steps: usize,
    /// One of [`ADJUST_LR_FNS`]; `None` means "original" (default `None`).
    pub adjust_lr_fn: Option<String>,
}

impl Default for MuonConfig {
    fn default() -> Self {
        MuonConfig {
            lr: 1e-3,
            weight_decay: 0.1,
            momentum: 0.95,
            nesterov: true,
            ns_coefficients: (3.4445, -4.7750, 2.0315),
            eps: 1e-7,
            ns_steps: 5,
            adjust_lr_fn: None,
        }
    }
}

impl MuonConfig {
    /// torch's `_adjust_lr`: the learning rate for a `rows × cols` matrix.
    pub fn adjusted_lr(&self, rows: usize, cols: usize) -> f64 {
        let (a, b) = (rows as f64, cols as f64);
        let ratio = match self.adjust_lr_fn.as_deref() {
            None | Some("original") => (a / b).max(1.0).sqrt(),
            Some("match_rms_adamw") => 0.2 * a.max(b).sqrt(),
            Some("spectral_unclamped") => (a / b).sqrt(),
            Some(_) => 1.0,
        };
        self.lr * ratio
    }
}

/// Muon's per-parameter state, under torch's keys.
#[derive(Clone, Debug)]
pub struct MuonState {
    /// The momentum buffer.
    pub momentum_buffer: Tensor,
    /// Newton–Schulz's matrices, kept so a step allocates nothing (not saved).
    workspace: NewtonSchulz,
}

crate::param_state!(MuonState {
    momentum_buffer: tensor,
} skip { workspace });

crate::hyperparameters!(MuonConfig {
    name: "Muon",
    torch_flags: &[],
    optional_keys: &[],

    fn validate(&self) -> Result<()> {
        // torch's checks and messages, in torch's order; NaNs are refused too.
        check_non_negative("lr", "Learning rate should be >= 0 but is", self.lr)?;
        check_non_negative("momentum", "momentum should be >= 0 but is", self.momentum)?;
        let wd_label = "weight decay should be >= 0 but is";
        check_non_negative("weight_decay", wd_label, self.weight_decay)?;
        if let Some(f) = self.adjust_lr_fn.as_deref() {
            if !ADJUST_LR_FNS.contains(&f) {
                let message = format!("Adjust learning rate function {f} is not supported");
                return Err(Error::hyper("adjust_lr_fn", message));
            }
        }
        if self.ns_steps >= 100 {
            let message = "Number of steps must be less than 100 for computational efficiency";
            return Err(Error::hyper("ns_steps", message.into()));
        }
        Ok(())
    }
});

impl Algorithm for MuonConfig {
    type State = MuonState;

    fn init_state(&self, param: &ParamMeta<'_>) -> MuonState {
        MuonState {
            momentum_buffer: param.zeros_like(),
            workspace: NewtonSchulz::default(),
        }
    }

    fn check_param(&self, shape: &[usize], param: usize) -> Result<()> {
        if shape.len() == 2 {
            Ok(())
        } else {
            Err(Error::ParamShapeUnsupported {
                optimizer: Self::NAME,
                param,
                shape: shape.to_vec(),
                expected: "2D",
            })
        }
    }

    fn update<T: Element>(
        &self,
        param: &mut [T],
        grad: &[T],
        shape: &[usize],
        state: &mut MuonState,
    ) -> Result<()> {
        self.check_param(shape, 0)?;
        let (rows, cols) = (shape[0], shape[1]);
        let buf = state.momentum_buffer.as_slice_mut::<T>()?;
        check_len("muon", "grad", param.len(), grad.len())?;
        check_len("muon", "momentum_buffer", param.len(), buf.len())?;
        let mu = T::from_f64(self.momentum);
        let one_minus_mu = T::from_f64(1.0 - self.momentum);
        for (b, &g) in buf.iter_mut().zip(grad) {
            *b = lerp(*b, g, one_minus_mu);
        }
        let buf = &*buf;
        let ortho = state.workspace.orthogonalize(
            rows,
            cols,
            |i| {
                let u = if self.nesterov {
                    lerp(grad[i], buf[i], mu)
                } else {
                    buf[i]
                };
                u.to_f64()
            },
            self.ns_coefficients,
            self.ns_steps,
            self.eps,
        );
        let decay = T::from_f64(1.0 - self.lr * self.weight_decay);
        let neg_lr = T::from_f64(-self.adjusted_lr(rows, cols));
        for (p, &o) in param.iter_mut().zip(ortho) {
            *p = T::from_f64(f64::from(o)).mul_add(neg_lr, *p * decay);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GroupSpec, Optimizer, Param};

    #[test]
    fn a_group_with_a_non_matrix_is_refused_and_changes_nothing() {
        let mut opt = Muon::new([Param::zeros::<f32>(&[2, 3])], MuonConfig::default()).unwrap();
        let bad = GroupSpec::new([Param::zeros::<f32>(&[4, 4]), Param::zeros::<f32>(&[4])]);
        let err = opt.add_param_group(bad).unwrap_err();
        assert!(
            matches!(&err, Error::ParamShapeUnsupported { param: 2, shape, .. } if shape == &[4]),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .starts_with("Muon only supports 2D parameters"));
        assert_eq!(opt.num_param_groups(), 1);
    }

    #[test]
    fn adjusted_lr_follows_torch_formulas() {
        let mut c = MuonConfig {
            lr: 1.0,
            ..Default::default()
        };
        assert_eq!(c.adjusted_lr(8, 2), 2.0);
        assert_eq!(c.adjusted_lr(2, 8), 1.0);
        c.adjust_lr_fn = Some("match_rms_adamw".into());
        assert!((c.adjusted_lr(2, 25) - 1.0).abs() < 1e-15);
        c.adjust_lr_fn = Some("spectral_unclamped".into());
        assert_eq!(c.adjusted_lr(2, 8), 0.5);
    }
}
