//! [`CandleLbfgs`]: torch's LBFGS over candle `Var`s, driven by a closure.

use std::ops::{Deref, DerefMut};

use candle_core::{Tensor, Var};
use ferroptim::optim::{Lbfgs, LbfgsConfig};

use crate::{params_of, step_with_loss, CandleParam, LossContext, Result};

/// LBFGS over candle `Var`s. As torch's, it needs a closure that recomputes
/// the loss, which it calls several times per [`step`](CandleLbfgs::step).
///
/// It is ferroptim's [`Lbfgs`] over [`CandleParam`]s: it moves the `Var`s
/// in place and keeps no copy of them, only LBFGS's state (the last
/// direction and gradient, and `2 * history_size` flat vectors of
/// history), plus, during a step, one flat copy of the parameters (torch's
/// `x_init`, also what a failed step is rolled back to). It dereferences to
/// [`Lbfgs`] for `state_dict`, `load_state_dict` and the hyperparameters.
///
/// ```
/// use candle_core::{Device, Var};
/// use ferroptim::optim::{LbfgsConfig, LineSearch};
/// use ferroptim_candle::CandleLbfgs;
///
/// // Rosenbrock from (-1.5, 2).
/// let (x, y) = (Var::new(&[-1.5f64], &Device::Cpu)?, Var::new(&[2.0f64], &Device::Cpu)?);
/// let config = LbfgsConfig { line_search_fn: Some(LineSearch::StrongWolfe), ..Default::default() };
/// let mut opt = CandleLbfgs::new(vec![x.clone(), y.clone()], config)?;
/// for _ in 0..10 {
///     opt.step(|| {
///         let (x, y) = (x.as_tensor(), y.as_tensor());
///         let a = (1.0 - x)?.sqr()?;
///         let b = (y - x.sqr()?)?.sqr()? * 100.0;
///         (a + b?)?.sum_all()
///     })?;
/// }
/// assert!((x.to_vec1::<f64>()?[0] - 1.0).abs() < 1e-4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct CandleLbfgs {
    inner: Lbfgs<CandleParam>,
}

impl CandleLbfgs {
    /// LBFGS over `vars` (`f32` or `f64`, on the CPU, all of one dtype).
    pub fn new(vars: Vec<Var>, config: LbfgsConfig) -> Result<Self> {
        Ok(CandleLbfgs {
            inner: Lbfgs::new(params_of(vars)?, config)?,
        })
    }

    /// One LBFGS step. `loss` computes the loss (a tensor of one element)
    /// from the `Var`s' current values; its gradients come from candle's
    /// backward pass. Returns the loss at the start of the step, as torch.
    pub fn step(&mut self, mut loss: impl FnMut() -> candle_core::Result<Tensor>) -> Result<f64> {
        let params = self.inner.params();
        step_with_loss(&mut self.inner, &params, |_| loss())
    }

    /// [`step`](Self::step) with a closure that gets the [`LossContext`]:
    /// which evaluation of this step it is (torch users count them by
    /// hand). Its `zero_grad` is there for symmetry with torch; candle's
    /// backward makes fresh gradients at every evaluation anyway.
    ///
    /// ```
    /// use candle_core::{Device, Var};
    /// use ferroptim::optim::LbfgsConfig;
    /// use ferroptim_candle::CandleLbfgs;
    /// let x = Var::new(&[3.0f64], &Device::Cpu)?;
    /// let mut opt = CandleLbfgs::new(vec![x.clone()], LbfgsConfig::default())?;
    /// let mut evaluations = 0;
    /// opt.step_with_context(|ctx| {
    ///     evaluations = ctx.evaluation();
    ///     x.as_tensor().sqr()?.sum_all()
    /// })?;
    /// assert!(evaluations > 1 && evaluations <= 25);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn step_with_context(
        &mut self,
        loss: impl FnMut(&LossContext) -> candle_core::Result<Tensor>,
    ) -> Result<f64> {
        let params = self.inner.params();
        step_with_loss(&mut self.inner, &params, loss)
    }
}

impl Deref for CandleLbfgs {
    type Target = Lbfgs<CandleParam>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl DerefMut for CandleLbfgs {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}
