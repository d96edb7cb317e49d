//! [`CandleLbfgs`]: torch's LBFGS over candle `Var`s, driven by a closure.

use std::ops::{Deref, DerefMut};

use candle_core::{Device, Tensor, Var};
use ferroptim::optim::{Lbfgs, LbfgsConfig};
use ferroptim::{Optimizer as _, Param, TensorData};

use crate::{CandleParam, Result};

/// LBFGS over candle `Var`s. As torch's, it needs a closure that recomputes
/// the loss, which it calls several times per [`step`](CandleLbfgs::step).
///
/// LBFGS works on all parameters as one flat vector and keeps a history of
/// `2 * history_size` such vectors, so unlike [`CandleOptim`](crate::CandleOptim)
/// it keeps its own copy of the parameters (ferroptim [`Param`]s), written
/// back to the `Var`s before each closure call and after the step.
/// It dereferences to ferroptim's [`Lbfgs`] for `state_dict`,
/// `load_state_dict` and the hyperparameters.
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
#[derive(Debug)]
pub struct CandleLbfgs {
    vars: Vec<Var>,
    params: Vec<Param>,
    inner: Lbfgs,
}

impl CandleLbfgs {
    /// LBFGS over `vars` (`f32` or `f64`, on the CPU, all of one dtype).
    pub fn new(vars: Vec<Var>, config: LbfgsConfig) -> Result<Self> {
        for (i, v) in vars.iter().enumerate() {
            CandleParam::new(v.clone(), i)?;
        }
        let params = vars
            .iter()
            .map(|v| Ok(Param::new(to_ferroptim(v.as_tensor())?)))
            .collect::<Result<Vec<_>>>()?;
        let inner = Lbfgs::new(params.clone(), config)?;
        Ok(CandleLbfgs {
            vars,
            params,
            inner,
        })
    }

    /// One LBFGS step. `loss` computes the loss (a tensor of one element)
    /// from the `Var`s' current values; its gradients come from candle's
    /// backward pass. Returns the loss at the start of the step, as torch.
    pub fn step(&mut self, mut loss: impl FnMut() -> candle_core::Result<Tensor>) -> Result<f64> {
        // The Vars may have been changed since the last step.
        for (v, p) in self.vars.iter().zip(&self.params) {
            p.set_value(to_ferroptim(v.as_tensor())?)?;
        }
        let (vars, params) = (&self.vars, &self.params);
        let mut closure = || -> ferroptim::Result<f64> {
            let mut run = || -> Result<f64> {
                write_back(vars, params)?;
                let loss = loss()?;
                let grads = loss.backward()?;
                for (v, p) in vars.iter().zip(params) {
                    match grads.get(v.as_tensor()) {
                        Some(g) => p.set_grad(to_ferroptim(g)?)?,
                        None => p.set_grad(p.value().zeros_like())?,
                    }
                }
                Ok(loss
                    .to_dtype(candle_core::DType::F64)?
                    .sum_all()?
                    .to_scalar::<f64>()?)
            };
            run().map_err(ferroptim::Error::closure)
        };
        let first = self.inner.step_with_closure(&mut closure)?;
        write_back(&self.vars, &self.params)?;
        Ok(first)
    }
}

impl Deref for CandleLbfgs {
    type Target = Lbfgs;
    fn deref(&self) -> &Lbfgs {
        &self.inner
    }
}

impl DerefMut for CandleLbfgs {
    fn deref_mut(&mut self) -> &mut Lbfgs {
        &mut self.inner
    }
}

fn to_ferroptim(t: &Tensor) -> Result<ferroptim::Tensor> {
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        candle_core::DType::F64 => ferroptim::Tensor::from_vec(flat.to_vec1::<f64>()?, t.dims())?,
        // f32, the only other dtype CandleParam::new lets through.
        _ => ferroptim::Tensor::from_vec(flat.to_vec1::<f32>()?, t.dims())?,
    })
}

fn write_back(vars: &[Var], params: &[Param]) -> Result<()> {
    for (v, p) in vars.iter().zip(params) {
        let t = p.with_value(|value| match value.data() {
            TensorData::F32(x) => Tensor::from_slice(x, value.shape(), &Device::Cpu),
            TensorData::F64(x) => Tensor::from_slice(x, value.shape(), &Device::Cpu),
        })?;
        v.set(&t)?;
    }
    Ok(())
}
