//! ASGD: averaged stochastic gradient descent (Polyak & Juditsky, 1992;
//! `torch.optim.ASGD`).
//!
//! ```text
//! g ← ±g + λ_wd·θ
//! θ ← (1 − λ·η_t)·θ − η_t·g
//! ā ← ā + μ_t·(θ − ā)                 (ā ← θ while μ_t = 1)
//! η_{t+1} = lr / (1 + λ·lr·t)^α
//! μ_{t+1} = 1 / max(1, t − t₀)
//! ```
//!
//! State: `step`, `eta`, `mu` (0-d float32 tensors, as torch keeps them, so
//! `η` and `μ` are rounded to float32 between steps exactly as there) and
//! `ax`, the averaged parameters. Averaging starts after `t0` steps.

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::error::Result;
use crate::kernels::{self, AsgdScalars, AsgdSlices};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::tensor::{Element, Storage, Tensor};
use crate::validate::check_non_negative;

/// ASGD over param groups.
pub type Asgd = Optim<AsgdConfig>;

/// ASGD's hyperparameters: torch's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{Asgd, AsgdConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64], &[1])?;
/// let mut opt = Asgd::new([p.clone()], AsgdConfig { lr: 0.1, t0: 0.0, ..Default::default() })?;
/// for _ in 0..3 {
///     p.set_grad(Tensor::from_vec(vec![1.0f64], &[1])?)?;
///     opt.step()?;
/// }
/// let ax = opt.state(&p).unwrap().ax.to_f64_vec()[0];
/// assert!(ax > p.to_vec::<f64>()?[0], "the average lags behind the iterate");
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AsgdConfig {
    /// Learning rate (default 1e-2).
    pub lr: f64,
    /// Decay term λ (default 1e-4).
    pub lambd: f64,
    /// Power α of the η update (default 0.75).
    pub alpha: f64,
    /// The step after which averaging starts (default 1e6).
    pub t0: f64,
    /// L2 penalty (default 0).
    pub weight_decay: f64,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
}

impl Default for AsgdConfig {
    fn default() -> Self {
        AsgdConfig {
            lr: 1e-2,
            lambd: 1e-4,
            alpha: 0.75,
            t0: 1e6,
            weight_decay: 0.0,
            maximize: false,
        }
    }
}

/// ASGD's per-parameter state, under torch's keys.
#[derive(Clone, Debug, PartialEq)]
pub struct AsgdState {
    /// Steps taken.
    pub step: f64,
    /// The learning rate of the next step, η (float32, as in torch).
    pub eta: f32,
    /// The averaging weight of the next step, μ (float32, as in torch).
    pub mu: f32,
    /// The averaged parameters.
    pub ax: Tensor,
}

crate::param_state!(AsgdState {
    step: step,
    eta: scalar_f32,
    mu: scalar_f32,
    ax: tensor,
});

crate::hyperparameters!(AsgdConfig {
    name: "ASGD",
    torch_flags: &["foreach", "differentiable", "capturable"],
    optional_keys: &["maximize"],

    fn validate(&self) -> Result<()> {
        check_non_negative("lr", "Invalid learning rate", self.lr)?;
        check_non_negative("lambd", "Invalid lambd value", self.lambd)?;
        check_non_negative("alpha", "Invalid alpha value", self.alpha)?;
        check_non_negative(
            "weight_decay",
            "Invalid weight_decay value",
            self.weight_decay,
        )
    }
});

impl Algorithm for AsgdConfig {
    type State = AsgdState;
    crate::dense_in_every_dtype!(AsgdState);

    fn init_state(&self, param: &ParamMeta<'_>) -> AsgdState {
        AsgdState {
            step: 0.0,
            eta: self.lr as f32,
            mu: 1.0,
            ax: param.zeros_like(),
        }
    }
}

impl AsgdConfig {
    /// One dense update in any storage type.
    fn dense<S: Storage>(
        &self,
        param: &mut [S],
        grad: &[S],
        _: &[usize],
        state: &mut AsgdState,
    ) -> Result<()> {
        let step = state.step + 1.0;
        let eta = f64::from(state.eta);
        let h = AsgdScalars {
            decay: S::Math::from_f64(1.0 - self.lambd * eta),
            neg_eta: S::Math::from_f64(-eta),
            mu: (state.mu != 1.0).then(|| S::Math::from_f64(f64::from(state.mu))),
            weight_decay: (self.weight_decay != 0.0).then(|| S::Math::from_f64(self.weight_decay)),
            maximize: self.maximize,
            tail: false,
        };
        let ax = state.ax.as_slice_mut::<S>()?;
        kernels::asgd(AsgdSlices { param, grad, ax }, &h)?;
        state.step = step;
        state.eta = (self.lr / (1.0 + self.lambd * self.lr * step).powf(self.alpha)) as f32;
        // Python's max(1, step − t0)
        let since = step - self.t0;
        state.mu = (1.0 / if since > 1.0 { since } else { 1.0 }) as f32;
        Ok(())
    }
}
