//! [`Param`]: a shared, learnable tensor and its gradient, like `torch.nn.Parameter`.
//!
//! A model and its optimizer hold clones of the same `Param`; cloning is cheap
//! (an `Arc`), and both see every update. The gradient is optional (`None`
//! after `zero_grad()`, as torch's `set_to_none=True`), and may be dense or
//! sparse (rows of the first dimension, for embedding-style updates).

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{Error, Result};
use crate::tensor::{Dtype, Element, Storage, Tensor, TensorDataMut};

/// A gradient: dense like the parameter, or sparse rows of it.
#[derive(Clone, Debug, PartialEq)]
pub enum Grad {
    /// Same shape and dtype as the parameter.
    Dense(Tensor),
    /// Rows of the parameter's first dimension (`torch.sparse_coo` with one sparse dim).
    Sparse(SparseGrad),
}

/// A sparse gradient: `values[k]` is added to row `indices[k]` of the
/// parameter. Indices may repeat and need not be sorted (torch coalesces them).
#[derive(Clone, Debug, PartialEq)]
pub struct SparseGrad {
    indices: Vec<usize>,
    values: Tensor,
}

impl SparseGrad {
    /// Rows `indices` with their `values` (shape `[indices.len(), row shape...]`).
    pub fn new(indices: Vec<usize>, values: Tensor) -> Result<Self> {
        if values.shape().first() != Some(&indices.len()) {
            return Err(Error::ShapeMismatch {
                what: "sparse gradient values".into(),
                expected: vec![indices.len()],
                found: values.shape().to_vec(),
            });
        }
        Ok(SparseGrad { indices, values })
    }

    /// The row indices.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// The row values.
    pub fn values(&self) -> &Tensor {
        &self.values
    }

    /// torch's `coalesce()`: the distinct rows in increasing order, with the
    /// values of repeated rows summed (in the order they appear; torch's
    /// unstable sort may add three or more repeats in another order, which
    /// changes only the rounding). Returns the rows and their values, flat.
    ///
    /// ```
    /// use ferroptim::{SparseGrad, Tensor};
    /// let values = Tensor::from_vec(vec![1.0f32, 2.0, 10.0, 20.0, 100.0, 200.0], &[3, 2])?;
    /// let g = SparseGrad::new(vec![4, 1, 4], values)?;
    /// let (rows, summed) = g.coalesced::<f32>()?;
    /// assert_eq!(rows, [1, 4]);
    /// assert_eq!(summed, [10.0, 20.0, 101.0, 202.0]);
    /// # Ok::<(), ferroptim::Error>(())
    /// ```
    pub fn coalesced<T: Element>(&self) -> Result<(Vec<usize>, Vec<T>)> {
        let values = self.values.as_slice::<T>()?;
        let width = if self.indices.is_empty() {
            0
        } else {
            values.len() / self.indices.len()
        };
        let mut order: Vec<usize> = (0..self.indices.len()).collect();
        order.sort_by_key(|&k| self.indices[k]); // stable
        let mut rows: Vec<usize> = Vec::with_capacity(order.len());
        let mut summed: Vec<T> = Vec::with_capacity(values.len());
        for k in order {
            let row = &values[k * width..(k + 1) * width];
            if rows.last() == Some(&self.indices[k]) {
                let start = summed.len() - width;
                for (acc, &v) in summed[start..].iter_mut().zip(row) {
                    *acc = *acc + v;
                }
            } else {
                rows.push(self.indices[k]);
                summed.extend_from_slice(row);
            }
        }
        Ok((rows, summed))
    }
}

#[derive(Debug)]
pub(crate) struct ParamInner {
    pub(crate) value: Tensor,
    pub(crate) grad: Option<Grad>,
}

/// A learnable tensor shared between a model and its optimizer.
///
/// ```
/// use ferroptim::{Param, Tensor};
/// let w = Param::from_vec(vec![1.0f32, 2.0], &[2])?;
/// let same = w.clone();                      // the same parameter, not a copy
/// w.set_grad(Tensor::from_vec(vec![0.5f32, -0.5], &[2])?)?;
/// assert!(same.grad().is_some());
/// assert_eq!(same.to_vec::<f32>()?, vec![1.0, 2.0]);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Param {
    inner: Arc<RwLock<ParamInner>>,
}

impl Param {
    /// A parameter holding `value`, with no gradient.
    pub fn new(value: Tensor) -> Self {
        Param {
            inner: Arc::new(RwLock::new(ParamInner { value, grad: None })),
        }
    }

    /// A parameter of `shape` holding `values` (row-major).
    pub fn from_vec<T: Storage>(values: Vec<T>, shape: &[usize]) -> Result<Self> {
        Ok(Self::new(Tensor::from_vec(values, shape)?))
    }

    /// A parameter of zeros.
    pub fn zeros<T: Storage>(shape: &[usize]) -> Self {
        Self::new(Tensor::zeros(T::DTYPE, shape))
    }

    /// Whether `self` and `other` are the same parameter (not merely equal values).
    pub fn same_as(&self, other: &Param) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// An identity usable as a map key; equal exactly when [`Param::same_as`].
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// The shape.
    pub fn shape(&self) -> Vec<usize> {
        self.read().value.shape().to_vec()
    }

    /// The dtype.
    pub fn dtype(&self) -> Dtype {
        self.read().value.dtype()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.read().value.numel()
    }

    /// A copy of the current value.
    pub fn value(&self) -> Tensor {
        self.read().value.clone()
    }

    /// The values as a `Vec<T>`; errors if the dtype is not `T`'s.
    pub fn to_vec<T: Storage>(&self) -> Result<Vec<T>> {
        Ok(self.read().value.as_slice::<T>()?.to_vec())
    }

    /// Runs `f` on the value without copying it.
    pub fn with_value<R>(&self, f: impl FnOnce(&Tensor) -> R) -> R {
        f(&self.read().value)
    }

    /// Replaces the value; the shape and dtype must stay the same.
    pub fn set_value(&self, value: Tensor) -> Result<()> {
        let mut inner = self.write();
        check_like(&inner.value, &value, "new value")?;
        inner.value = value;
        Ok(())
    }

    /// Runs `f` on the values in place (e.g. to load weights); the shape
    /// and dtype stay as they are.
    ///
    /// ```
    /// use ferroptim::{Param, TensorDataMut};
    /// let w = Param::zeros::<f32>(&[3]);
    /// w.with_value_mut(|data| {
    ///     if let TensorDataMut::F32(v) = data {
    ///         v.copy_from_slice(&[1.0, 2.0, 3.0]);
    ///     }
    /// });
    /// assert_eq!(w.to_vec::<f32>()?, [1.0, 2.0, 3.0]);
    /// # Ok::<(), ferroptim::Error>(())
    /// ```
    pub fn with_value_mut<R>(&self, f: impl FnOnce(TensorDataMut<'_>) -> R) -> R {
        f(self.write().value.data_mut())
    }

    /// Whether the gradient (if any) holds only finite values; a parameter
    /// without a gradient counts as finite. Reads in place, copies nothing.
    pub fn grad_is_finite(&self) -> bool {
        fn finite(t: &Tensor) -> bool {
            t.data().all_finite()
        }
        match &self.read().grad {
            None => true,
            Some(Grad::Dense(t)) => finite(t),
            Some(Grad::Sparse(s)) => finite(s.values()),
        }
    }

    /// A copy of the gradient, if any.
    pub fn grad(&self) -> Option<Grad> {
        self.read().grad.clone()
    }

    /// Sets a dense gradient; it must have the parameter's shape and dtype
    /// (torch refuses the same assignment).
    pub fn set_grad(&self, grad: Tensor) -> Result<()> {
        let mut inner = self.write();
        check_like(&inner.value, &grad, "gradient")?;
        inner.grad = Some(Grad::Dense(grad));
        Ok(())
    }

    /// Sets a sparse gradient (rows of the first dimension).
    pub fn set_sparse_grad(&self, grad: SparseGrad) -> Result<()> {
        let mut inner = self.write();
        let shape = inner.value.shape();
        let rows = shape.first().copied().unwrap_or(0);
        let row_shape = shape.get(1..).unwrap_or(&[]);
        if shape.is_empty() || grad.values.shape().get(1..).unwrap_or(&[]) != row_shape {
            let mut expected = vec![grad.indices.len()];
            expected.extend_from_slice(row_shape);
            return Err(Error::ShapeMismatch {
                what: "sparse gradient values".into(),
                expected,
                found: grad.values.shape().to_vec(),
            });
        }
        if grad.values.dtype() != inner.value.dtype() {
            return Err(Error::DtypeMismatch {
                what: "sparse gradient values".into(),
                expected: inner.value.dtype(),
                found: grad.values.dtype(),
            });
        }
        if let Some(&bad) = grad.indices.iter().find(|&&i| i >= rows) {
            return Err(Error::ShapeMismatch {
                what: format!("sparse gradient row index {bad}"),
                expected: vec![rows],
                found: vec![bad + 1],
            });
        }
        inner.grad = Some(Grad::Sparse(grad));
        Ok(())
    }

    /// Drops the gradient (`p.grad = None`).
    pub fn clear_grad(&self) {
        self.write().grad = None;
    }

    /// Sets the gradient's values to zero, keeping it allocated
    /// (`zero_grad(set_to_none=False)`).
    pub fn zero_grad_in_place(&self) {
        let mut inner = self.write();
        match &mut inner.grad {
            Some(Grad::Dense(g)) => *g = g.zeros_like(),
            Some(Grad::Sparse(g)) => {
                g.indices.clear();
                let mut shape = g.values.shape().to_vec();
                shape[0] = 0;
                g.values = Tensor::zeros(g.values.dtype(), &shape);
            }
            None => {}
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, ParamInner> {
        // A panic in another thread while it held the lock leaves plain data behind;
        // there is no invariant to protect, so carry on rather than propagate the panic.
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, ParamInner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn check_like(param: &Tensor, other: &Tensor, what: &str) -> Result<()> {
    if other.shape() != param.shape() {
        return Err(Error::ShapeMismatch {
            what: what.into(),
            expected: param.shape().to_vec(),
            found: other.shape().to_vec(),
        });
    }
    if other.dtype() != param.dtype() {
        return Err(Error::DtypeMismatch {
            what: what.into(),
            expected: param.dtype(),
            found: other.dtype(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_value_and_grad() {
        let p = Param::zeros::<f64>(&[3]);
        let q = p.clone();
        assert!(p.same_as(&q) && p.id() == q.id());
        assert!(!p.same_as(&Param::zeros::<f64>(&[3])));
        q.set_value(Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3]).unwrap())
            .unwrap();
        assert_eq!(p.to_vec::<f64>().unwrap(), vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn gradients_must_match_shape_and_dtype() {
        let p = Param::zeros::<f32>(&[2, 2]);
        assert!(matches!(
            p.set_grad(Tensor::zeros(Dtype::F32, &[4])),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            p.set_grad(Tensor::zeros(Dtype::F64, &[2, 2])),
            Err(Error::DtypeMismatch { .. })
        ));
        assert!(p.grad().is_none());
        p.set_grad(Tensor::from_vec(vec![1.0f32; 4], &[2, 2]).unwrap())
            .unwrap();
        p.zero_grad_in_place();
        assert_eq!(
            p.grad(),
            Some(Grad::Dense(Tensor::zeros(Dtype::F32, &[2, 2])))
        );
        p.clear_grad();
        assert!(p.grad().is_none());
    }

    #[test]
    fn sparse_gradients_are_checked() {
        let p = Param::zeros::<f32>(&[4, 2]);
        let rows = Tensor::from_vec(vec![1.0f32; 4], &[2, 2]).unwrap();
        p.set_sparse_grad(SparseGrad::new(vec![3, 0], rows.clone()).unwrap())
            .unwrap();
        assert!(p
            .set_sparse_grad(SparseGrad::new(vec![4, 0], rows).unwrap())
            .is_err());
        let wrong_row = Tensor::from_vec(vec![1.0f32; 3], &[1, 3]).unwrap();
        assert!(p
            .set_sparse_grad(SparseGrad::new(vec![1], wrong_row).unwrap())
            .is_err());
        assert!(SparseGrad::new(vec![1, 2], Tensor::zeros(Dtype::F32, &[1, 2])).is_err());
    }
}
