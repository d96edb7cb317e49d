//! [`CandleParam`]: a candle `Var` as a ferroptim parameter slot.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::backend::BackendStorage;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Storage, Tensor, Var};
use ferroptim::{Dtype, GradKind, GradRef, ParamSlot, SlotData, TensorDataMut, UpdateFn, ValueFn};

use crate::{Error, Result};

/// A candle `Var` that a ferroptim optimizer updates in place. Clones are
/// the same parameter (the same `Var`).
///
/// During [`CandleOptim::step_with`](crate::CandleOptim::step_with) it also
/// holds the `Var`'s gradient from the `GradStore`, by reference (a tensor
/// handle, no copy); between steps it holds none.
#[derive(Clone, Debug)]
pub struct CandleParam {
    var: Var,
    dtype: Dtype,
    grad: Arc<Mutex<Option<Tensor>>>,
}

impl CandleParam {
    /// Wraps `var`, which must be `f32` or `f64` and on the CPU; `index`
    /// names it in the error.
    pub fn new(var: Var, index: usize) -> Result<Self> {
        let dtype = match var.dtype() {
            DType::F32 => Dtype::F32,
            DType::F64 => Dtype::F64,
            DType::BF16 => Dtype::BF16,
            DType::F16 => Dtype::F16,
            other => {
                return Err(Error::UnsupportedDtype {
                    param: index,
                    dtype: other,
                })
            }
        };
        if !var.device().is_cpu() {
            return Err(Error::UnsupportedDevice {
                param: index,
                device: format!("{:?}", var.device().location()),
            });
        }
        Ok(CandleParam {
            var,
            dtype,
            grad: Arc::default(),
        })
    }

    /// The `Var`.
    pub fn var(&self) -> &Var {
        &self.var
    }

    /// Takes this parameter's gradient from `grads` for the next update.
    pub(crate) fn attach_grad(&self, grads: &GradStore) {
        *self.lock() = grads.get(self.var.as_tensor()).cloned();
    }

    /// Lets go of the gradient.
    pub(crate) fn detach_grad(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Tensor>> {
        self.grad.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ParamSlot for CandleParam {
    fn shape(&self) -> Vec<usize> {
        self.var.dims().to_vec()
    }

    fn dtype(&self) -> Dtype {
        self.dtype
    }

    type Key = candle_core::TensorId;

    fn key(&self) -> candle_core::TensorId {
        self.var.id()
    }

    fn grad_kind(&self, index: usize) -> ferroptim::Result<Option<GradKind>> {
        let grad = self.lock();
        let Some(grad) = grad.as_ref() else {
            return Ok(None);
        };
        if grad.dims() != self.var.dims() {
            return Err(ferroptim::Error::ShapeMismatch {
                what: format!("gradient of parameter {index}"),
                expected: self.var.dims().to_vec(),
                found: grad.dims().to_vec(),
            });
        }
        if grad.dtype() != self.var.dtype() {
            return Err(storage_error(
                index,
                format!(
                    "gradient is {:?}, the parameter {:?}",
                    grad.dtype(),
                    self.var.dtype()
                ),
            ));
        }
        Ok(Some(GradKind::Dense))
    }

    fn grad_is_finite(&self) -> bool {
        let grad = self.lock();
        let Some(grad) = grad.as_ref() else {
            return true;
        };
        let (storage, layout) = grad.storage_and_layout();
        let in_place = match (&*storage, layout.contiguous_offsets()) {
            (Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => {
                Some(v[a..b].iter().all(|x| x.is_finite()))
            }
            (Storage::Cpu(CpuStorage::F64(v)), Some((a, b))) => {
                Some(v[a..b].iter().all(|x| x.is_finite()))
            }
            (Storage::Cpu(CpuStorage::BF16(v)), Some((a, b))) => {
                Some(v[a..b].iter().all(|x| x.is_finite()))
            }
            (Storage::Cpu(CpuStorage::F16(v)), Some((a, b))) => {
                Some(v[a..b].iter().all(|x| x.is_finite()))
            }
            _ => None,
        };
        drop(storage);
        // Not contiguous, or not f32/f64 (refused at the step anyway): ask candle.
        in_place.unwrap_or_else(|| all_finite(grad).unwrap_or(false))
    }

    fn clear_grad(&self) {
        self.detach_grad();
    }

    /// candle keeps gradients in the `GradStore`, not in the `Var`: there is
    /// no zero gradient to keep, so this drops it.
    fn zero_grad_in_place(&self) {
        self.detach_grad();
    }

    fn update_in_place(&self, index: usize, update: &mut UpdateFn<'_>) -> ferroptim::Result<()> {
        let grad = self.lock();
        let Some(grad) = grad.as_ref() else {
            return Ok(());
        };
        // Gradients from backward are contiguous; anything else is made so (a copy).
        let contiguous;
        let grad = if grad.is_contiguous() {
            grad
        } else {
            contiguous = grad
                .contiguous()
                .map_err(|e| storage_error(index, e.to_string()))?;
            &contiguous
        };
        let op = InPlaceUpdate {
            update: RefCell::new(update),
            failed: Cell::new(None),
        };
        let outcome = self.var.as_tensor().inplace_op2(grad, &op);
        match (op.failed.into_inner(), outcome) {
            (Some(e), _) => Err(e),
            (None, Ok(())) => Ok(()),
            (None, Err(e)) => Err(storage_error(index, e.to_string())),
        }
    }

    fn with_value_mut(&self, index: usize, f: &mut ValueFn<'_>) -> ferroptim::Result<()> {
        values_in_place(self.var.as_tensor(), index, f)
    }

    /// The gradient in the `GradStore` is changed in place (backward's
    /// gradients are contiguous tensors of their own). One that is not
    /// contiguous is replaced, for this step, by a contiguous copy.
    fn with_grad_mut(&self, index: usize, f: &mut ValueFn<'_>) -> ferroptim::Result<bool> {
        let mut grad = self.lock();
        let Some(g) = grad.as_mut() else {
            return Ok(false);
        };
        if !g.is_contiguous() {
            *g = g
                .contiguous()
                .map_err(|e| storage_error(index, e.to_string()))?;
        }
        values_in_place(g, index, f)?;
        Ok(true)
    }
}

/// Runs `f` on the values of `t` in place, through candle's in-place op
/// (the storage is written where it is: no copy).
fn values_in_place(t: &Tensor, index: usize, f: &mut ValueFn<'_>) -> ferroptim::Result<()> {
    let op = InPlaceValues {
        f: RefCell::new(f),
        failed: Cell::new(None),
    };
    let outcome = t.inplace_op1(&op);
    match (op.failed.into_inner(), outcome) {
        (Some(e), _) => Err(e),
        (None, Ok(())) => Ok(()),
        (None, Err(e)) => Err(storage_error(index, e.to_string())),
    }
}

fn all_finite(t: &Tensor) -> candle_core::Result<bool> {
    let t = t.to_dtype(DType::F64)?.flatten_all()?;
    Ok(t.to_vec1::<f64>()?.iter().all(|x| x.is_finite()))
}

fn storage_error(param: usize, message: String) -> ferroptim::Error {
    ferroptim::Error::Storage {
        param,
        source: message.into(),
    }
}

/// The candle in-place op that runs one ferroptim update on a `Var`'s
/// storage (`s1`, written) with its gradient (`s2`, read).
struct InPlaceUpdate<'a, 'f> {
    update: RefCell<&'a mut UpdateFn<'f>>,
    /// ferroptim's own error, kept whole (candle's error type would flatten it).
    failed: Cell<Option<ferroptim::Error>>,
}

impl InplaceOp2 for InPlaceUpdate<'_, '_> {
    fn name(&self) -> &'static str {
        "ferroptim-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (Some((a1, b1)), Some((a2, b2))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("ferroptim updates contiguous parameters and gradients only");
        };
        let shape = l1.dims();
        let mut update = self.update.borrow_mut();
        let result = match (s1, s2) {
            (CpuStorage::F32(p), CpuStorage::F32(g)) => (update)(
                shape,
                SlotData::F32(&mut p[a1..b1], GradRef::Dense(&g[a2..b2])),
            ),
            (CpuStorage::F64(p), CpuStorage::F64(g)) => (update)(
                shape,
                SlotData::F64(&mut p[a1..b1], GradRef::Dense(&g[a2..b2])),
            ),
            (CpuStorage::BF16(p), CpuStorage::BF16(g)) => (update)(
                shape,
                SlotData::BF16(&mut p[a1..b1], GradRef::Dense(&g[a2..b2])),
            ),
            (CpuStorage::F16(p), CpuStorage::F16(g)) => (update)(
                shape,
                SlotData::F16(&mut p[a1..b1], GradRef::Dense(&g[a2..b2])),
            ),
            (p, g) => candle_core::bail!(
                "ferroptim updates f32, f64, bf16 and f16 parameters with a gradient of the same dtype, not {:?} with {:?}",
                p.dtype(),
                g.dtype()
            ),
        };
        result.map_err(|e| {
            self.failed.set(Some(e));
            candle_core::Error::Msg("ferroptim update failed".into())
        })
    }
}

/// The candle in-place op that hands a `Var`'s values to ferroptim.
struct InPlaceValues<'a, 'f> {
    f: RefCell<&'a mut ValueFn<'f>>,
    failed: Cell<Option<ferroptim::Error>>,
}

impl InplaceOp1 for InPlaceValues<'_, '_> {
    fn name(&self) -> &'static str {
        "ferroptim-values"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("ferroptim updates contiguous parameters only");
        };
        let mut f = self.f.borrow_mut();
        let result = match s {
            CpuStorage::F32(v) => (f)(TensorDataMut::F32(&mut v[a..b])),
            CpuStorage::F64(v) => (f)(TensorDataMut::F64(&mut v[a..b])),
            CpuStorage::BF16(v) => (f)(TensorDataMut::BF16(&mut v[a..b])),
            CpuStorage::F16(v) => (f)(TensorDataMut::F16(&mut v[a..b])),
            other => candle_core::bail!(
                "ferroptim updates f32, f64, bf16 and f16 parameters, not {:?}",
                other.dtype()
            ),
        };
        result.map_err(|e| {
            self.failed.set(Some(e));
            candle_core::Error::Msg("ferroptim update failed".into())
        })
    }
}
