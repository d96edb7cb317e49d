//! Dense tensors with a runtime dtype: the storage behind a [`Param`](crate::Param),
//! its gradient and the optimizer state.
//!
//! The dtype is checked once per tensor, never per element: kernels receive
//! plain slices of a [`Storage`] type (`f32`, `f64`, `bf16`, `f16`) and
//! compute in its [`Storage::Math`] type, an [`Element`] (`f32` or `f64`).

use std::fmt;

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

pub use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::json::JsonFloat;

/// The values of a tensor, one variant per dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// `float32` values.
    F32(Vec<f32>),
    /// `float64` values.
    F64(Vec<f64>),
    /// `bfloat16` values.
    BF16(Vec<bf16>),
    /// `float16` values.
    F16(Vec<f16>),
}

impl TensorData {
    /// The dtype.
    pub fn dtype(&self) -> Dtype {
        match self {
            TensorData::F32(_) => Dtype::F32,
            TensorData::F64(_) => Dtype::F64,
            TensorData::BF16(_) => Dtype::BF16,
            TensorData::F16(_) => Dtype::F16,
        }
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::BF16(v) => v.len(),
            TensorData::F16(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every value is finite.
    pub fn all_finite(&self) -> bool {
        match self {
            TensorData::F32(v) => v.iter().all(|x| x.is_finite()),
            TensorData::F64(v) => v.iter().all(|x| x.is_finite()),
            TensorData::BF16(v) => v.iter().all(|x| x.is_finite()),
            TensorData::F16(v) => v.iter().all(|x| x.is_finite()),
        }
    }

    /// Every value widened to `f64` (exact).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::F64(v) => v.clone(),
            TensorData::BF16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            TensorData::F16(v) => v.iter().map(|&x| x.to_f64()).collect(),
        }
    }

    /// `values` rounded to `dtype` as torch's `tensor.to(dtype)` rounds a
    /// float64 tensor: to nearest, and to the 16-bit types through `float`
    /// (c10's `BFloat16` and `Half` are constructed from a `float`).
    pub fn from_f64s(dtype: Dtype, values: impl Iterator<Item = f64>) -> TensorData {
        match dtype {
            Dtype::F64 => TensorData::F64(values.collect()),
            Dtype::F32 => TensorData::F32(values.map(|x| x as f32).collect()),
            Dtype::BF16 => TensorData::BF16(values.map(|x| bf16::from_f32(x as f32)).collect()),
            Dtype::F16 => TensorData::F16(values.map(|x| f16::from_f32(x as f32)).collect()),
        }
    }
}

/// A tensor's values, borrowed mutably ([`Tensor::data_mut`]): slices, so
/// that a tensor's data always fills its shape. Values change; their
/// number cannot:
///
/// ```compile_fail
/// use ferroptim::{Param, TensorDataMut};
/// let w = Param::zeros::<f32>(&[3]);
/// w.with_value_mut(|data| {
///     if let TensorDataMut::F32(v) = data {
///         v.push(1.0); // a slice has no push: the shape stays [3]
///     }
/// });
/// ```
#[derive(Debug)]
pub enum TensorDataMut<'a> {
    /// `float32` values.
    F32(&'a mut [f32]),
    /// `float64` values.
    F64(&'a mut [f64]),
    /// `bfloat16` values.
    BF16(&'a mut [bf16]),
    /// `float16` values.
    F16(&'a mut [f16]),
}

impl<'a> TensorDataMut<'a> {
    /// The dtype.
    pub fn dtype(&self) -> Dtype {
        match self {
            TensorDataMut::F32(_) => Dtype::F32,
            TensorDataMut::F64(_) => Dtype::F64,
            TensorDataMut::BF16(_) => Dtype::BF16,
            TensorDataMut::F16(_) => Dtype::F16,
        }
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        match self {
            TensorDataMut::F32(v) => v.len(),
            TensorDataMut::F64(v) => v.len(),
            TensorDataMut::BF16(v) => v.len(),
            TensorDataMut::F16(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the values as a tensor of `shape`.
    pub fn to_tensor(&self, shape: &[usize]) -> Result<Tensor> {
        let data = match self {
            TensorDataMut::F32(v) => TensorData::F32(v.to_vec()),
            TensorDataMut::F64(v) => TensorData::F64(v.to_vec()),
            TensorDataMut::BF16(v) => TensorData::BF16(v.to_vec()),
            TensorDataMut::F16(v) => TensorData::F16(v.to_vec()),
        };
        Tensor::new(data, shape)
    }

    /// Copies `src`'s values in; errors if its dtype or number of values differ.
    pub fn copy_from(self, src: &Tensor) -> Result<()> {
        fn copy<T: Storage>(dst: &mut [T], src: &Tensor) -> Result<()> {
            let src = src.as_slice::<T>()?;
            if src.len() != dst.len() {
                return Err(Error::ShapeDataMismatch {
                    shape: vec![dst.len()],
                    expected: dst.len(),
                    actual: src.len(),
                });
            }
            dst.copy_from_slice(src);
            Ok(())
        }
        match self {
            TensorDataMut::F32(v) => copy(v, src),
            TensorDataMut::F64(v) => copy(v, src),
            TensorDataMut::BF16(v) => copy(v, src),
            TensorDataMut::F16(v) => copy(v, src),
        }
    }

    /// The values as a slice of `T`; errors if the dtype is not `T`'s.
    pub fn into_slice<T: Storage>(self) -> Result<&'a mut [T]> {
        let found = self.dtype();
        T::slice_of_mut(self).ok_or_else(|| dtype_error(found, T::DTYPE))
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
}

/// A type a tensor's values are stored in (`f32`, `f64`, `bf16`, `f16`),
/// and the type its arithmetic is done in ([`Storage::Math`]: torch's
/// `opmath_type`, `f32` for the 16-bit types).
///
/// torch's CPU kernels load 16-bit values into `float`, compute one
/// operation there (with Python scalars as `float`) and round its result
/// to the tensor's dtype; kernels do the same: [`Storage::load`], the
/// operation in `Math`, then [`Storage::store`] for a stored value or
/// [`Storage::round`] where torch keeps an intermediate tensor. For `f32`
/// and `f64` all three are the identity.
pub trait Storage:
    sealed::Sealed + Copy + Default + PartialEq + fmt::Debug + Send + Sync + 'static
{
    /// The runtime dtype of this type.
    const DTYPE: Dtype;
    /// The type operations are computed in.
    type Math: Element;
    /// The value, widened (exact).
    fn load(self) -> Self::Math;
    /// `x` rounded to nearest (even) in this type.
    fn store(x: Self::Math) -> Self;
    /// `x` rounded to this type and widened back: an intermediate result
    /// of torch's, which it holds in a tensor of this dtype.
    #[inline(always)]
    fn round(x: Self::Math) -> Self::Math {
        Self::store(x).load()
    }
    /// The slice inside `data`, if it holds this type.
    fn slice(data: &TensorData) -> Option<&[Self]>;
    /// The mutable slice inside `data`, if it holds this type.
    fn slice_mut(data: &mut TensorData) -> Option<&mut [Self]>;
    /// The slice borrowed by `data`, if it holds this type.
    fn slice_of_mut(data: TensorDataMut<'_>) -> Option<&mut [Self]>;
    /// Wraps a vector as tensor data.
    fn into_data(values: Vec<Self>) -> TensorData;
    /// Element `index` of little-endian `bytes` (how torch and safetensors
    /// store tensors); the caller has checked `bytes` holds it.
    fn read_le(bytes: &[u8], index: usize) -> Self;
    /// The elements of little-endian `bytes` (a trailing partial element is ignored).
    fn from_le_slice(bytes: &[u8]) -> Vec<Self> {
        (0..bytes.len() / std::mem::size_of::<Self>())
            .map(|i| Self::read_le(bytes, i))
            .collect()
    }
}

/// A floating point type kernels compute in (`f32`, `f64`); stored, it is
/// its own [`Storage`].
///
/// Kernels are generic over it; the scalar operations are the ones torch's
/// CPU kernels use, so results agree to the bit where the order agrees.
pub trait Element:
    Storage<Math = Self>
    + crate::linalg::Linalg
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
{
    /// Zero.
    const ZERO: Self;
    /// One.
    const ONE: Self;
    /// Machine epsilon, widened (torch's `finfo(dtype).eps`).
    const EPSILON: f64;
    /// Rounds an `f64` (a Python float) to this type, as torch does with scalars.
    fn from_f64(x: f64) -> Self;
    /// Widens to `f64` (exact).
    fn to_f64(self) -> f64;
    /// `self * a + b` with one rounding (torch's `fmadd`).
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Whether the value is NaN.
    fn is_nan(self) -> bool;

    /// `torch.maximum`: the larger value, NaN if either is NaN.
    #[inline]
    fn nan_max(self, other: Self) -> Self {
        if self.is_nan() || other.is_nan() {
            if self.is_nan() {
                self
            } else {
                other
            }
        } else if self > other {
            self
        } else {
            other
        }
    }
}

macro_rules! impl_element {
    ($t:ty, $dtype:ident) => {
        impl Storage for $t {
            const DTYPE: Dtype = Dtype::$dtype;
            type Math = $t;
            #[inline(always)]
            fn load(self) -> Self {
                self
            }
            #[inline(always)]
            fn store(x: Self) -> Self {
                x
            }
            impl_storage_slices!($t, $dtype);
        }

        impl Element for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const EPSILON: f64 = <$t>::EPSILON as f64;
            #[inline]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
        }
    };
}

/// The 16-bit types: stored as themselves, computed in `f32`, and
/// converted as c10 converts them (`BFloat16(float)`, `Half(float)`): to
/// nearest, ties to even. Written here without branches, so that a kernel's
/// loop over 16-bit values vectorises (`half`'s conversions branch per
/// element, and its `f16` one asks the CPU for F16C at every call).
macro_rules! impl_reduced {
    ($t:ty, $dtype:ident, $load:path, $store:path) => {
        impl Storage for $t {
            const DTYPE: Dtype = Dtype::$dtype;
            type Math = f32;
            #[inline(always)]
            fn load(self) -> f32 {
                $load(self.to_bits())
            }
            #[inline(always)]
            fn store(x: f32) -> Self {
                <$t>::from_bits($store(x))
            }
            impl_storage_slices!($t, $dtype);
        }
    };
}

/// bfloat16 bits widened: the upper half of an `f32` (exact).
#[inline(always)]
fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// c10's `round_to_nearest_even`: NaN becomes the quiet NaN `0x7FC0`.
#[inline(always)]
fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = (bits.wrapping_add(((bits >> 16) & 1) + 0x7FFF) >> 16) as u16;
    if x.is_nan() {
        0x7FC0
    } else {
        rounded
    }
}

/// c10's `fp16_ieee_to_fp32_value` (from the FP16 library): exact.
#[inline(always)]
fn f16_to_f32(h: u16) -> f32 {
    let w = u32::from(h) << 16;
    let sign = w & 0x8000_0000;
    let two_w = w.wrapping_add(w);
    let exp_offset = 0xE0u32 << 23;
    let exp_scale = f32::from_bits(0x0780_0000); // 2^-112
    let normalized = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;
    let magic_mask = 126u32 << 23;
    let denormalized = f32::from_bits((two_w >> 17) | magic_mask) - 0.5;
    let denormalized_cutoff = 1u32 << 27;
    let magnitude = if two_w < denormalized_cutoff {
        denormalized.to_bits()
    } else {
        normalized.to_bits()
    };
    f32::from_bits(sign | magnitude)
}

/// c10's `fp16_ieee_from_fp32_value` (from the FP16 library): to nearest
/// even through `f32` arithmetic; NaN becomes `0x7E00` with its sign.
#[inline(always)]
fn f32_to_f16(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(239u32 << 23); // 2^112
    let scale_to_zero = f32::from_bits(17u32 << 23); // 2^-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let bias = (shl1_w & 0xFF00_0000).max(0x7100_0000);
    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    let magnitude = if shl1_w > 0xFF00_0000 {
        0x7E00
    } else {
        nonsign
    };
    ((sign >> 16) | magnitude) as u16
}

macro_rules! impl_storage_slices {
    ($t:ty, $dtype:ident) => {
        #[inline]
        fn slice(data: &TensorData) -> Option<&[Self]> {
            match data {
                TensorData::$dtype(v) => Some(v),
                _ => None,
            }
        }
        #[inline]
        fn slice_mut(data: &mut TensorData) -> Option<&mut [Self]> {
            match data {
                TensorData::$dtype(v) => Some(v),
                _ => None,
            }
        }
        #[inline]
        fn slice_of_mut(data: TensorDataMut<'_>) -> Option<&mut [Self]> {
            match data {
                TensorDataMut::$dtype(v) => Some(v),
                _ => None,
            }
        }
        fn into_data(values: Vec<Self>) -> TensorData {
            TensorData::$dtype(values)
        }
        fn read_le(bytes: &[u8], index: usize) -> Self {
            const N: usize = std::mem::size_of::<$t>();
            let mut out = [0; N];
            out.copy_from_slice(&bytes[index * N..index * N + N]);
            <$t>::from_le_bytes(out)
        }
    };
}

impl_element!(f32, F32);
impl_element!(f64, F64);
impl_reduced!(bf16, BF16, bf16_to_f32, f32_to_bf16);
impl_reduced!(f16, F16, f16_to_f32, f32_to_f16);

/// A dense, contiguous tensor: a shape and row-major values of one dtype.
///
/// ```
/// use ferroptim::{Dtype, Tensor};
/// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
/// assert_eq!((t.shape(), t.dtype(), t.numel()), (&[2, 2][..], Dtype::F32, 4));
/// assert_eq!(t.as_slice::<f32>()?, &[1.0, 2.0, 3.0, 4.0]);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TensorRepr", into = "TensorRepr")]
pub struct Tensor {
    /// Inline up to 4 dimensions, so that reading a shape is no second load
    /// from elsewhere in memory (a step checks every gradient's shape).
    shape: Shape,
    data: TensorData,
}

type Shape = smallvec::SmallVec<[usize; 4]>;

impl Tensor {
    /// A tensor of `shape` holding `values` in row-major order.
    pub fn from_vec<T: Storage>(values: Vec<T>, shape: &[usize]) -> Result<Self> {
        Self::new(T::into_data(values), shape)
    }

    /// A tensor from raw data; errors if the data does not fill the shape.
    pub fn new(data: TensorData, shape: &[usize]) -> Result<Self> {
        let expected = numel(shape);
        let actual = data.len();
        if expected != actual {
            return Err(Error::ShapeDataMismatch {
                shape: shape.to_vec(),
                expected,
                actual,
            });
        }
        Ok(Tensor {
            shape: Shape::from_slice(shape),
            data,
        })
    }

    /// A 0-d tensor holding `value` (torch's `torch.tensor(value)`).
    pub fn scalar<T: Storage>(value: T) -> Self {
        Tensor {
            shape: Shape::new(),
            data: T::into_data(vec![value]),
        }
    }

    /// A 0-d tensor of `dtype` holding `value` rounded to it.
    pub fn scalar_of(dtype: Dtype, value: f64) -> Self {
        Tensor {
            shape: Shape::new(),
            data: TensorData::from_f64s(dtype, std::iter::once(value)),
        }
    }

    /// Zeros of the given dtype and shape.
    pub fn zeros(dtype: Dtype, shape: &[usize]) -> Self {
        let n = numel(shape);
        let data = match dtype {
            Dtype::F32 => TensorData::F32(vec![0.0; n]),
            Dtype::F64 => TensorData::F64(vec![0.0; n]),
            Dtype::BF16 => TensorData::BF16(vec![bf16::ZERO; n]),
            Dtype::F16 => TensorData::F16(vec![f16::ZERO; n]),
        };
        Tensor {
            shape: Shape::from_slice(shape),
            data,
        }
    }

    /// `value` (rounded to `dtype`) in every element (`torch.full`).
    pub fn full(dtype: Dtype, shape: &[usize], value: f64) -> Self {
        Tensor {
            shape: Shape::from_slice(shape),
            data: TensorData::from_f64s(dtype, std::iter::repeat_n(value, numel(shape))),
        }
    }

    /// Zeros with this tensor's dtype and shape (`torch.zeros_like`).
    #[must_use]
    pub fn zeros_like(&self) -> Self {
        Self::zeros(self.dtype(), &self.shape)
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The dtype.
    pub fn dtype(&self) -> Dtype {
        self.data.dtype()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// The raw data.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The values, mutably: as slices, so their number (and with it the
    /// shape) cannot change.
    pub fn data_mut(&mut self) -> TensorDataMut<'_> {
        self.parts_mut().1
    }

    /// The shape and the mutable values at once.
    pub fn parts_mut(&mut self) -> (&[usize], TensorDataMut<'_>) {
        let data = match &mut self.data {
            TensorData::F32(v) => TensorDataMut::F32(v),
            TensorData::F64(v) => TensorDataMut::F64(v),
            TensorData::BF16(v) => TensorDataMut::BF16(v),
            TensorData::F16(v) => TensorDataMut::F16(v),
        };
        (&self.shape, data)
    }

    /// The values as a slice of `T`; errors if the dtype is not `T`'s.
    pub fn as_slice<T: Storage>(&self) -> Result<&[T]> {
        let found = self.dtype();
        T::slice(&self.data).ok_or_else(|| dtype_error(found, T::DTYPE))
    }

    /// The values as a mutable slice of `T`; errors if the dtype is not `T`'s.
    pub fn as_slice_mut<T: Storage>(&mut self) -> Result<&mut [T]> {
        let found = self.dtype();
        T::slice_mut(&mut self.data).ok_or_else(|| dtype_error(found, T::DTYPE))
    }

    /// Every value widened to `f64`.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.data.to_f64_vec()
    }

    /// This tensor converted to `dtype` (`tensor.to(dtype)`, rounding to
    /// nearest; a 16-bit value widens exactly, so converting through `f64`
    /// rounds once, except from `f64` to a 16-bit type, which torch rounds
    /// through `float` as [`TensorData::from_f64s`] does).
    #[must_use]
    pub fn to_dtype(&self, dtype: Dtype) -> Tensor {
        let data = if self.dtype() == dtype {
            self.data.clone()
        } else {
            TensorData::from_f64s(dtype, self.data.to_f64_vec().into_iter())
        };
        Tensor {
            shape: self.shape.clone(),
            data,
        }
    }
}

fn dtype_error(found: Dtype, expected: Dtype) -> Error {
    Error::DtypeMismatch {
        what: "tensor".into(),
        expected,
        found,
    }
}

/// The number of elements of a shape (1 for a 0-d shape); `usize::MAX` when
/// the product overflows, which no data can fill (so a corrupt shape is an
/// error, not a panic).
pub(crate) fn numel(shape: &[usize]) -> usize {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .unwrap_or(usize::MAX)
}

/// How a tensor is written in JSON: `{"dtype": "float32", "shape": [2], "data": [1.5, "nan"]}`.
/// Values are exact doubles; non-finite values are the strings `"nan"`, `"inf"`, `"-inf"`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorRepr {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<JsonFloat>,
}

impl From<Tensor> for TensorRepr {
    fn from(t: Tensor) -> Self {
        let dtype = t.dtype();
        let data = t
            .to_f64_vec()
            .into_iter()
            .map(JsonFloat::from_f64)
            .collect();
        TensorRepr {
            dtype,
            shape: t.shape.to_vec(),
            data,
        }
    }
}

impl TryFrom<TensorRepr> for Tensor {
    type Error = String;

    fn try_from(r: TensorRepr) -> Result<Self, String> {
        let values = r
            .data
            .iter()
            .map(JsonFloat::to_f64)
            .collect::<Result<Vec<f64>, String>>()?;
        let data = TensorData::from_f64s(r.dtype, values.into_iter());
        Tensor::new(data, &r.shape).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_is_exact_and_keeps_non_finite_values() {
        let values = vec![
            0.1f32,
            -3.5e-30,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
        ];
        let t = Tensor::from_vec(values.clone(), &[2, 3]).unwrap();
        let back: Tensor = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        let got = back.as_slice::<f32>().unwrap();
        for (a, b) in values.iter().zip(got) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        let d = Tensor::from_vec(vec![0.1f64, 1.0 / 3.0, 2.0f64.powi(-1070)], &[3]).unwrap();
        let back: Tensor = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn json_rejects_data_that_does_not_fill_the_shape() {
        let err =
            serde_json::from_str::<Tensor>(r#"{"dtype":"float32","shape":[2,2],"data":[1.0]}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("holds 4 elements, but 1 values"), "{err}");
        let err = serde_json::from_str::<Tensor>(r#"{"dtype":"float32","shape":[1],"data":["x"]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a number"), "{err}");
    }

    #[test]
    fn shapes_and_dtypes_are_checked() {
        assert!(matches!(
            Tensor::from_vec(vec![1.0f64; 5], &[2, 3]),
            Err(Error::ShapeDataMismatch {
                expected: 6,
                actual: 5,
                ..
            })
        ));
        let t = Tensor::scalar(2.0f64);
        assert_eq!(t.numel(), 1);
        assert!(matches!(
            t.as_slice::<f32>(),
            Err(Error::DtypeMismatch { .. })
        ));
        assert_eq!(Tensor::zeros(Dtype::F32, &[0, 3]).numel(), 0);
    }

    /// The branch-free conversions agree with `half`'s on every 16-bit
    /// value (widening) and on a sweep of `f32` values (rounding), NaN
    /// aside, which c10 makes canonical.
    #[test]
    fn sixteen_bit_conversions_round_to_nearest_even() {
        for bits in 0..=u16::MAX {
            let (b, h) = (bf16::from_bits(bits), f16::from_bits(bits));
            if !b.is_nan() {
                assert_eq!(b.load().to_bits(), b.to_f32().to_bits(), "bf16 {bits:#x}");
            }
            if !h.is_nan() {
                assert_eq!(h.load().to_bits(), h.to_f32().to_bits(), "f16 {bits:#x}");
            }
        }
        let mut x = 0u32;
        while x < u32::MAX - 9973 {
            let f = f32::from_bits(x);
            x += 9973;
            if f.is_nan() {
                assert_eq!(bf16::store(f).to_bits(), 0x7FC0);
                assert!(f16::store(f).is_nan());
                continue;
            }
            assert_eq!(bf16::store(f), bf16::from_f32(f), "{f:e}");
            assert_eq!(f16::store(f).to_bits(), f16::from_f32(f).to_bits(), "{f:e}");
        }
        // Ties go to even.
        assert_eq!(
            bf16::store(1.0 + 2f32.powi(-8)).to_bits(),
            bf16::ONE.to_bits()
        );
        assert_eq!(
            f16::store(1.0 + 2f32.powi(-11)).to_bits(),
            f16::ONE.to_bits()
        );
    }

    #[test]
    fn nan_max_propagates_nan_like_torch_maximum() {
        assert!(f32::NAN.nan_max(1.0).is_nan());
        assert!(1.0f64.nan_max(f64::NAN).is_nan());
        assert_eq!(2.0f32.nan_max(3.0), 3.0);
    }
}
