//! Where an optimizer's parameters live.
//!
//! [`Optim`](crate::Optim) keeps param groups, state, schedulers' keys and
//! checkpoints; it touches a parameter only through [`ParamSlot`]: its shape
//! and dtype, its gradient, and one in-place update per step. ferroptim's own
//! [`Param`] is one slot; a framework adapter (`ferroptim-candle`) provides
//! another over the framework's tensors, so its parameters are updated where
//! they are, with no copy kept on the ferroptim side.

use std::fmt::Debug;

use crate::error::{Error, Result};
use crate::param::{Grad, Param, SparseGrad};
use half::{bf16, f16};

use crate::tensor::{Dtype, Storage, Tensor, TensorDataMut};

/// One update of a parameter, as [`ParamSlot::update_in_place`] runs it:
/// given the shape, the values and the gradient.
pub type UpdateFn<'f> = dyn FnMut(&[usize], SlotData<'_>) -> Result<()> + 'f;

/// A change of a parameter's values alone, as [`ParamSlot::with_value_mut`] runs it.
pub type ValueFn<'f> = dyn FnMut(TensorDataMut<'_>) -> Result<()> + 'f;

/// A parameter as an optimizer sees it. Clones are the same parameter.
pub trait ParamSlot: Clone + Debug + Send + Sync + 'static {
    /// The shape.
    fn shape(&self) -> Vec<usize>;
    /// The dtype.
    fn dtype(&self) -> Dtype;
    /// What identifies the parameter: equal exactly for clones of the same one.
    type Key: Copy + Eq + std::hash::Hash + Debug + Send + Sync;
    /// The parameter's identity.
    fn key(&self) -> Self::Key;
    /// Whether `self` and `other` are the same parameter (not merely equal values).
    fn same_as(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
    /// The kind of the current gradient (`None` without one), after checking
    /// that it fits the parameter; `index` (state_dict numbering) names the
    /// parameter in the error.
    fn grad_kind(&self, index: usize) -> Result<Option<GradKind>>;
    /// Whether the gradient (if any) holds only finite values.
    fn grad_is_finite(&self) -> bool;
    /// Drops the gradient.
    fn clear_grad(&self);
    /// Sets the gradient to zero, or drops it where the slot cannot keep a zero gradient.
    fn zero_grad_in_place(&self);
    /// Runs `update` once on the value (in place) and the gradient, with the
    /// parameter's shape. Does nothing when there is no gradient. `index`
    /// (state_dict numbering) names the parameter in errors.
    fn update_in_place(&self, index: usize, update: &mut UpdateFn<'_>) -> Result<()>;
    /// Runs `f` once on the values, in place, with or without a gradient
    /// (LBFGS moves every parameter along one direction, and restores them
    /// after a failed step). `index` (state_dict numbering) names the
    /// parameter in errors.
    fn with_value_mut(&self, index: usize, f: &mut ValueFn<'_>) -> Result<()>;
    /// Runs `f` once on the dense gradient, in place (gradient clipping
    /// reads and scales it); returns whether there was one. A sparse
    /// gradient is not handed out: [`ParamSlot::grad_kind`] says when one
    /// is there. `index` (state_dict numbering) names the parameter in errors.
    fn with_grad_mut(&self, index: usize, f: &mut ValueFn<'_>) -> Result<bool>;
}

/// Whether a gradient is dense or sparse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradKind {
    /// Same shape as the parameter.
    Dense,
    /// Rows of the first dimension.
    Sparse,
}

/// A parameter's values, borrowed for one update, with its gradient.
#[derive(Debug)]
pub enum SlotData<'a> {
    /// An `f32` parameter.
    F32(&'a mut [f32], GradRef<'a, f32>),
    /// An `f64` parameter.
    F64(&'a mut [f64], GradRef<'a, f64>),
    /// A `bfloat16` parameter.
    BF16(&'a mut [bf16], GradRef<'a, bf16>),
    /// A `float16` parameter.
    F16(&'a mut [f16], GradRef<'a, f16>),
}

impl<'a> SlotData<'a> {
    /// The parameter's dtype.
    pub fn dtype(&self) -> Dtype {
        match self {
            SlotData::F32(..) => Dtype::F32,
            SlotData::F64(..) => Dtype::F64,
            SlotData::BF16(..) => Dtype::BF16,
            SlotData::F16(..) => Dtype::F16,
        }
    }

    /// The values and gradient as `T`; an error if the parameter is of another dtype.
    pub fn typed<T: SlotElement>(self) -> Result<(&'a mut [T], GradRef<'a, T>)> {
        let found = self.dtype();
        T::from_slot(self).ok_or(Error::DtypeMismatch {
            what: "parameter".into(),
            expected: T::DTYPE,
            found,
        })
    }
}

/// A [`Storage`] type a [`SlotData`] can hold: how to take its variant out.
pub trait SlotElement: Storage {
    /// `Some` if `data` holds this type.
    fn from_slot(data: SlotData<'_>) -> Option<(&mut [Self], GradRef<'_, Self>)>;
}

macro_rules! slot_element {
    ($t:ty, $variant:ident) => {
        impl SlotElement for $t {
            fn from_slot(data: SlotData<'_>) -> Option<(&mut [$t], GradRef<'_, $t>)> {
                match data {
                    SlotData::$variant(v, g) => Some((v, g)),
                    _ => None,
                }
            }
        }
    };
}

slot_element!(f32, F32);
slot_element!(f64, F64);
slot_element!(bf16, BF16);
slot_element!(f16, F16);

/// A borrowed gradient.
#[derive(Debug)]
pub enum GradRef<'a, T> {
    /// Dense values, one per parameter element.
    Dense(&'a [T]),
    /// Sparse rows.
    Sparse(&'a SparseGrad),
}

/// What an algorithm needs to create a parameter's state: its shape and dtype.
#[derive(Clone, Copy, Debug)]
pub struct ParamMeta<'a> {
    shape: &'a [usize],
    dtype: Dtype,
}

impl<'a> ParamMeta<'a> {
    /// A parameter of `shape` and `dtype`.
    pub fn new(shape: &'a [usize], dtype: Dtype) -> Self {
        ParamMeta { shape, dtype }
    }
    /// The shape.
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }
    /// The dtype.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }
    /// Zeros of the parameter's shape and dtype.
    pub fn zeros_like(&self) -> Tensor {
        Tensor::zeros(self.dtype, self.shape)
    }
}

impl ParamSlot for Param {
    fn shape(&self) -> Vec<usize> {
        Param::shape(self)
    }

    fn dtype(&self) -> Dtype {
        Param::dtype(self)
    }

    type Key = usize;

    fn key(&self) -> usize {
        Param::id(self)
    }

    fn grad_kind(&self, index: usize) -> Result<Option<GradKind>> {
        let inner = self.read();
        match &inner.grad {
            None => Ok(None),
            Some(Grad::Sparse(_)) => Ok(Some(GradKind::Sparse)),
            Some(Grad::Dense(g)) => {
                if g.shape() != inner.value.shape() {
                    return Err(Error::ShapeMismatch {
                        what: format!("gradient of parameter {index}"),
                        expected: inner.value.shape().to_vec(),
                        found: g.shape().to_vec(),
                    });
                }
                if g.dtype() != inner.value.dtype() {
                    return Err(Error::DtypeMismatch {
                        what: format!("gradient of parameter {index}"),
                        expected: inner.value.dtype(),
                        found: g.dtype(),
                    });
                }
                Ok(Some(GradKind::Dense))
            }
        }
    }

    fn grad_is_finite(&self) -> bool {
        Param::grad_is_finite(self)
    }

    fn clear_grad(&self) {
        Param::clear_grad(self)
    }

    fn zero_grad_in_place(&self) {
        Param::zero_grad_in_place(self)
    }

    fn update_in_place(&self, _index: usize, update: &mut UpdateFn<'_>) -> Result<()> {
        let mut guard = self.write();
        let inner = &mut *guard;
        let Some(grad) = &inner.grad else {
            return Ok(());
        };
        let (shape, data) = inner.value.parts_mut();
        let data = match (data, grad) {
            (TensorDataMut::F32(v), Grad::Dense(g)) => {
                SlotData::F32(v, GradRef::Dense(g.as_slice()?))
            }
            (TensorDataMut::F64(v), Grad::Dense(g)) => {
                SlotData::F64(v, GradRef::Dense(g.as_slice()?))
            }
            (TensorDataMut::F32(v), Grad::Sparse(g)) => SlotData::F32(v, GradRef::Sparse(g)),
            (TensorDataMut::F64(v), Grad::Sparse(g)) => SlotData::F64(v, GradRef::Sparse(g)),
            (TensorDataMut::BF16(v), Grad::Dense(g)) => {
                SlotData::BF16(v, GradRef::Dense(g.as_slice()?))
            }
            (TensorDataMut::F16(v), Grad::Dense(g)) => {
                SlotData::F16(v, GradRef::Dense(g.as_slice()?))
            }
            (TensorDataMut::BF16(v), Grad::Sparse(g)) => SlotData::BF16(v, GradRef::Sparse(g)),
            (TensorDataMut::F16(v), Grad::Sparse(g)) => SlotData::F16(v, GradRef::Sparse(g)),
        };
        update(shape, data)
    }

    fn with_value_mut(&self, _index: usize, f: &mut ValueFn<'_>) -> Result<()> {
        let mut guard = self.write();
        f(guard.value.data_mut())
    }

    fn with_grad_mut(&self, _index: usize, f: &mut ValueFn<'_>) -> Result<bool> {
        let mut guard = self.write();
        match &mut guard.grad {
            Some(Grad::Dense(g)) => f(g.data_mut()).map(|()| true),
            _ => Ok(false),
        }
    }
}
