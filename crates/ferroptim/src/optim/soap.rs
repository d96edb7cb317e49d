//! SOAP: Adam in the eigenbasis of Shampoo's preconditioner (Vyas et al.,
//! 2024, "SOAP: Improving and Stabilizing Shampoo using Adam"), as
//! pytorch-optimizer 4.1.0 implements it.
//!
//! For a parameter with dimensions `n₀ × … × n_{k−1}` (merged first with
//! `merge_dims`), each dimension `i` up to `max_precondition_dim` long keeps
//! the statistics `Gᵢ` (`GG`, `nᵢ × nᵢ`) and an orthogonal basis `Qᵢ` (`Q`)
//! of its eigenvectors; the others keep the identity. `P(x)` applies every
//! `Qᵢᵀ` along its dimension, `Pᵀ(x)` every `Qᵢ`. With group step `t`,
//! gradient `g` (negated if maximizing), `s = t − 1`:
//!
//! ```text
//! t = 1:  Gᵢ ← lerp(Gᵢ, gᵢgᵢᵀ, 1 − β_sh)    gᵢgᵢᵀ: g's products summed over the other dimensions
//!         Qᵢ ← eigenvectors of Gᵢ + 10⁻³⁰·I, largest eigenvalue first
//!         (nothing else moves)
//! t > 1:  m ← lerp(m, g, 1 − β₁)                       (in the parameter's basis)
//!         v ← lerp(v, P(g)², 1 − β₂)                   (in the eigenbasis)
//!         u ← Pᵀ(P(m) / (√v + ε))
//!         u ← u / (√mean(u²) + ε)                      (normalize_gradient)
//!         θ ← θ − lr·√(1 − β₂ˢ)/(1 − β₁ˢ)·u            (without correct_bias: lr·u)
//!         θ ← θ·(1 − lr·λ)
//!         Gᵢ ← lerp(Gᵢ, gᵢgᵢᵀ, 1 − β_sh)
//!         every precondition_frequency steps (s a multiple of it): one power
//!         iteration, Qᵢ ← QR(Gᵢ·Qᵢ) with its columns sorted by the estimated
//!         eigenvalues diag(Qᵢᵀ·Gᵢ·Qᵢ), v's entries along i sorted alike
//! ```
//!
//! `β_sh` is `shampoo_beta`, `β₂` when `None`. A parameter's first
//! gradient is taken into `Gᵢ` when its state is made (its group's first
//! step or a later one), and again after its update when that is not the
//! group's first step, as in the reference. Vectors are preconditioned only
//! with `precondition_1d`; a 4-D parameter is read as NHWC
//! (`data_format = "channels_last"`) only to merge its dimensions.
//!
//! The state holds pytorch-optimizer's keys: `exp_avg`, `exp_avg_sq`,
//! `GG` and `Q` (lists with one entry per dimension; the reference's `[]`
//! for an identity dimension is an empty tensor here, which it reads alike),
//! `precondition_frequency` and `shampoo_beta`. The step is counted per
//! group; `maximize` and `data_format` are arguments of the optimizer, not
//! of a group, and not in the state_dict.
//!
//! The eigendecomposition and QR are faer's, not LAPACK's: the bases agree
//! with the reference's up to the signs of their columns (which the update
//! does not depend on) and rounding. Where a matrix has repeated
//! eigenvalues (the statistics of a non-square matrix or a vector after one
//! gradient have a null space), any basis of that space is an answer, and
//! the two libraries pick different ones; see `tests/integration/soap.rs`
//! for how the tests compare them. Non-finite statistics give a basis of
//! NaNs (the reference's `eigh` raises instead, in the middle of a step).

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
use crate::error::{Error, Result};
use crate::json::is_zero;
use crate::kernels::{check_len, soap};
use crate::linalg::{Linalg, View};
use crate::optimizer::Optim;
use crate::slot::ParamMeta;
use crate::state::{ParamState, ParamStateDict, StateEntries, StateValue};
use crate::tensor::{Dtype, Element, Tensor};
use crate::validate::{pto_betas, pto_learning_rate, pto_non_negative};

/// SOAP over param groups.
pub type Soap = Optim<SoapConfig>;

/// How a 4-D parameter's dimensions are read when they are merged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// NCHW, as stored (the default).
    #[default]
    ChannelsFirst,
    /// NHWC: permuted to NCHW before merging, and back after.
    ChannelsLast,
}

/// SOAP's hyperparameters: pytorch-optimizer's arguments and defaults.
///
/// ```
/// use ferroptim::{optim::{Soap, SoapConfig}, Optimizer, Param, Tensor};
/// let p = Param::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], &[2, 2])?;
/// let mut opt = Soap::new([p.clone()], SoapConfig { lr: 0.1, weight_decay: 0.0, ..Default::default() })?;
/// for _ in 0..2 {
///     p.set_grad(Tensor::from_vec(vec![1.0f64, 0.0, 0.0, 2.0], &[2, 2])?)?;
///     opt.step()?;
/// }
/// // Step 1 only learns the eigenbases (here the axes); step 2 is Adam's
/// // first step in them: lr·(√(1−β₂)/(1−β₁))·(1−β₁)g/(√(1−β₂)|g|) = lr
/// // where the gradient is not 0, nothing where it is.
/// let v = p.to_vec::<f64>()?;
/// assert!((v[0] - 0.9).abs() < 1e-6 && (v[1] - 2.0).abs() < 1e-9 && (v[3] - 3.9).abs() < 1e-6);
/// # Ok::<(), ferroptim::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SoapConfig {
    /// Learning rate (default 3e-3; 0 is allowed, as in the reference).
    pub lr: f64,
    /// The decays of the first (β₁) and second (β₂) moments, in [0, 1) (default (0.95, 0.95)).
    pub betas: (f64, f64),
    /// The decay of the preconditioner statistics; `None` takes β₂ (default `None`).
    pub shampoo_beta: Option<f64>,
    /// Decoupled weight decay λ, applied after the update (default 0.01).
    pub weight_decay: f64,
    /// Steps between two updates of the eigenbases, at least 1 (default 10).
    pub precondition_frequency: u64,
    /// The longest dimension that is preconditioned; longer ones keep the identity (default 10000).
    pub max_precondition_dim: usize,
    /// Merge small dimensions into ones of at most `max_precondition_dim` (default false).
    pub merge_dims: bool,
    /// Precondition vectors too (default false).
    pub precondition_1d: bool,
    /// Adam's bias correction (default true).
    pub correct_bias: bool,
    /// Divide the update by its root mean square (default false).
    pub normalize_gradient: bool,
    /// Added to `√v` (default 1e-8).
    pub eps: f64,
    /// The group's step count (in a group from its first step on, as in the reference).
    #[serde(skip_serializing_if = "is_zero")]
    pub step: u64,
    /// Ascend instead of descend (default false). An argument of the
    /// optimizer: every group has the defaults', and a load keeps it.
    #[serde(skip_serializing)]
    pub maximize: bool,
    /// The layout of 4-D parameters, for `merge_dims` (default channels
    /// first). An argument of the optimizer, as `maximize`.
    #[serde(skip_serializing)]
    pub data_format: DataFormat,
}

impl Default for SoapConfig {
    fn default() -> Self {
        SoapConfig {
            lr: 3e-3,
            betas: (0.95, 0.95),
            shampoo_beta: None,
            weight_decay: 1e-2,
            precondition_frequency: 10,
            max_precondition_dim: 10000,
            merge_dims: false,
            precondition_1d: false,
            correct_bias: true,
            normalize_gradient: false,
            eps: 1e-8,
            step: 0,
            maximize: false,
            data_format: DataFormat::ChannelsFirst,
        }
    }
}

/// How SOAP sees a parameter: the dimensions it projects along and which of
/// them are preconditioned.
#[derive(Clone, Debug, PartialEq)]
struct Layout {
    /// The dimensions, merged if `merge_dims` (NHWC read as NCHW first).
    dims: Vec<usize>,
    /// Whether each dimension has statistics and a basis (or the identity).
    preconditioned: Vec<bool>,
    /// Whether the parameter is read NHWC → NCHW (4-D, merged, channels last).
    nhwc: bool,
    /// The parameter's shape.
    shape: Vec<usize>,
}

/// The hyperparameters a [`Layout`] depends on (besides the shape, which a
/// state never changes).
#[derive(Clone, Copy, Debug, PartialEq)]
struct LayoutKey {
    merge_dims: bool,
    precondition_1d: bool,
    max_precondition_dim: usize,
    data_format: DataFormat,
}

impl Layout {
    fn any_preconditioned(&self) -> bool {
        self.preconditioned.iter().any(|&p| p)
    }
}

/// pytorch-optimizer's `merge_small_dims`: consecutive dimensions multiplied
/// together while the product stays within `max_dim`. One merged dimension
/// comes back as `[1]`, as in the reference (which then cannot reshape a
/// parameter of more than one element to it).
fn merge_small_dims(shape: &[usize], max_dim: usize) -> Vec<usize> {
    let mut merged = Vec::new();
    let mut product = 1usize;
    for &dim in shape {
        product = product.saturating_mul(dim);
        if product > max_dim {
            merged.push(product / dim);
            product = dim;
        }
    }
    merged.push(product);
    if merged.len() > 1 {
        merged
    } else {
        vec![1]
    }
}

impl SoapConfig {
    /// The reference's view of a parameter of `shape` (parameter `index`).
    fn layout(&self, shape: &[usize], index: usize) -> Result<Layout> {
        let max = self.max_precondition_dim;
        let numel: usize = shape.iter().product();
        let unmergeable = || Error::MergeDimsUnsupported {
            optimizer: "SOAP",
            param: index,
            shape: shape.to_vec(),
            max_precondition_dim: max,
        };
        if let [n] = *shape {
            // Vectors are never merged for their statistics; the reference
            // reshapes them to `merge_small_dims` in its projections, which
            // fails unless that is [1] of one element or [1, n].
            if self.merge_dims && n != 1 && n <= max {
                return Err(unmergeable());
            }
            return Ok(Layout {
                dims: vec![n],
                preconditioned: vec![self.precondition_1d && n <= max],
                nhwc: false,
                shape: shape.to_vec(),
            });
        }
        let nhwc =
            self.merge_dims && self.data_format == DataFormat::ChannelsLast && shape.len() == 4;
        let dims = if self.merge_dims {
            let mut s = shape.to_vec();
            if nhwc {
                s = vec![shape[0], shape[3], shape[1], shape[2]];
            }
            let merged = merge_small_dims(&s, max);
            if merged.iter().product::<usize>() != numel {
                return Err(unmergeable());
            }
            merged
        } else {
            shape.to_vec()
        };
        let preconditioned = dims.iter().map(|&d| d <= max).collect();
        Ok(Layout {
            dims,
            preconditioned,
            nhwc,
            shape: shape.to_vec(),
        })
    }

    fn layout_key(&self) -> LayoutKey {
        LayoutKey {
            merge_dims: self.merge_dims,
            precondition_1d: self.precondition_1d,
            max_precondition_dim: self.max_precondition_dim,
            data_format: self.data_format,
        }
    }

    fn shampoo_beta(&self) -> f64 {
        self.shampoo_beta.unwrap_or(self.betas.1)
    }
}

/// SOAP's per-parameter state, under pytorch-optimizer's keys.
#[derive(Clone, Debug)]
pub struct SoapState {
    /// The first moment, in the parameter's basis.
    pub exp_avg: Tensor,
    /// The second moment, in the eigenbasis.
    pub exp_avg_sq: Tensor,
    /// Each dimension's statistics (`GG`): `nᵢ × nᵢ`, or `None` for the identity.
    pub gg: Vec<Option<Tensor>>,
    /// Each dimension's eigenbasis (`Q`), its columns the eigenvectors;
    /// empty until the first gradient has been taken in.
    pub q: Vec<Option<Tensor>>,
    /// The steps between basis updates, as the state was made with them.
    pub precondition_frequency: u64,
    /// The decay of the statistics, as the state was made with it.
    pub shampoo_beta: f64,
    /// Whether the bases exist (the reference's `Q is not None`).
    ready: bool,
    workspace: Workspace,
}

/// Buffers a step reuses (not saved): three of the parameter's size for
/// the projections and the update, two of the largest preconditioned
/// dimension squared for the statistics and bases, and the basis update's
/// ordering.
#[derive(Clone, Debug, Default)]
struct Workspace {
    /// The parameter's layout, for the hyperparameters it was made with.
    layout: Option<(LayoutKey, Layout)>,
    tensors: Option<[Tensor; 5]>,
    order: Vec<usize>,
    estimates: Vec<f64>,
}

/// The workspace's buffers for `numel` elements and `square` matrix entries.
fn buffers<T: Element>(
    tensors: &mut Option<[Tensor; 5]>,
    numel: usize,
    square: usize,
) -> Result<[&mut [T]; 5]> {
    let fits = tensors.as_ref().is_some_and(|t| {
        t[0].dtype() == T::DTYPE && t[0].numel() == numel && t[3].numel() >= square
    });
    if !fits {
        let t = |n: usize| Tensor::zeros(T::DTYPE, &[n]);
        *tensors = Some([t(numel), t(numel), t(numel), t(square), t(square)]);
    }
    let Some([a, b, c, d, e]) = tensors.as_mut() else {
        unreachable!("the buffers were just made")
    };
    Ok([
        a.as_slice_mut::<T>()?,
        b.as_slice_mut::<T>()?,
        c.as_slice_mut::<T>()?,
        d.as_slice_mut::<T>()?,
        e.as_slice_mut::<T>()?,
    ])
}

fn empty(dtype: Dtype) -> Tensor {
    Tensor::zeros(dtype, &[0])
}

fn list(entries: &[Option<Tensor>], dtype: Dtype) -> StateValue {
    StateValue::TensorList(
        entries
            .iter()
            .map(|t| t.clone().unwrap_or_else(|| empty(dtype)))
            .collect(),
    )
}

impl ParamState for SoapState {
    fn to_entries(&self) -> ParamStateDict {
        let dtype = self.exp_avg.dtype();
        let mut entries = ParamStateDict::from([
            ("exp_avg".into(), StateValue::Tensor(self.exp_avg.clone())),
            (
                "exp_avg_sq".into(),
                StateValue::Tensor(self.exp_avg_sq.clone()),
            ),
            ("GG".into(), list(&self.gg, dtype)),
            (
                "precondition_frequency".into(),
                StateValue::Int(self.precondition_frequency.min(i64::MAX as u64) as i64),
            ),
            ("shampoo_beta".into(), StateValue::Float(self.shampoo_beta)),
        ]);
        if self.ready {
            entries.insert("Q".into(), list(&self.q, dtype));
        }
        entries
    }

    fn from_entries(mut entries: StateEntries<'_>) -> Result<Self> {
        let exp_avg = entries.tensor("exp_avg")?;
        let exp_avg_sq = entries.tensor("exp_avg_sq")?;
        // An empty tensor is the reference's `[]`: no matrix for that
        // dimension. The shapes are checked against the layout in `check_state`.
        let matrices = |list: Vec<Tensor>| {
            list.into_iter()
                .map(|t| (t.numel() > 0 || t.shape().len() == 2).then_some(t))
                .collect::<Vec<_>>()
        };
        let gg = matrices(entries.tensors("GG")?);
        let q = matrices(entries.tensors("Q")?);
        let frequency = entries.optional_number("precondition_frequency")?;
        let precondition_frequency = match frequency {
            Some(f) if f >= 1.0 && f.fract() == 0.0 && f <= crate::state::MAX_STEP => f as u64,
            other => {
                return Err(Error::state(
                    format!("state[{}].precondition_frequency", entries.index()),
                    format!("expected a whole number of steps, at least 1, found {other:?}"),
                ))
            }
        };
        let shampoo_beta = entries.optional_number("shampoo_beta")?.ok_or_else(|| {
            Error::state(
                format!("state[{}].shampoo_beta", entries.index()),
                "missing; this optimizer keeps it for every parameter",
            )
        })?;
        entries.finish()?;
        Ok(SoapState {
            exp_avg,
            exp_avg_sq,
            gg,
            q,
            precondition_frequency,
            shampoo_beta,
            ready: true,
            workspace: Workspace::default(),
        })
    }
}

crate::hyperparameters!(SoapConfig {
    name: "SOAP",
    reference: "pytorch-optimizer 4.1.0",
    keys_when_set: &["step"],
    torch_flags: &[],
    optional_keys: &[],

    /// pytorch-optimizer's checks, in its order and with its messages.
    fn validate(&self) -> Result<()> {
        pto_learning_rate(self.lr)?;
        pto_betas(&[self.betas.0, self.betas.1])?;
        if let Some(beta) = self.shampoo_beta {
            pto_non_negative("shampoo_beta", beta)?;
        }
        pto_non_negative("weight_decay", self.weight_decay)?;
        if self.precondition_frequency == 0 {
            let message = "precondition_frequency must be positive";
            return Err(Error::hyper("precondition_frequency", message.into()));
        }
        if self.max_precondition_dim == 0 {
            let message = "max_precondition_dim must be positive";
            return Err(Error::hyper("max_precondition_dim", message.into()));
        }
        pto_non_negative("eps", self.eps)
    }

    fn inherit(&mut self, defaults: &Self) {
        self.keep_unsaved(defaults);
    }

    fn keep_unsaved(&mut self, live: &Self) {
        self.maximize = live.maximize;
        self.data_format = live.data_format;
    }
});

impl Algorithm for SoapConfig {
    type State = SoapState;

    fn begin_step(&mut self) {
        // Saturating: a step count read from a checkpoint may be anything.
        self.step = self.step.saturating_add(1);
    }

    fn check_param(&self, shape: &[usize], param: usize) -> Result<()> {
        self.layout(shape, param).map(drop)
    }

    /// The statistics and bases must be the ones these hyperparameters make
    /// for the parameter: one entry per dimension of its layout, a square
    /// matrix where it is preconditioned and an empty one where not.
    fn check_state(&self, state: &SoapState, index: usize) -> Result<()> {
        let shape = state.exp_avg.shape();
        if state.exp_avg_sq.shape() != shape {
            return Err(Error::ShapeMismatch {
                what: format!("state_dict state[{index}].exp_avg_sq"),
                expected: shape.to_vec(),
                found: state.exp_avg_sq.shape().to_vec(),
            });
        }
        let computed;
        let layout = match &state.workspace.layout {
            Some((key, layout)) if *key == self.layout_key() => layout,
            _ => {
                computed = self.layout(shape, index)?;
                &computed
            }
        };
        let lists = [("GG", &state.gg), ("Q", &state.q)];
        for (key, list) in lists.into_iter().take(if state.ready { 2 } else { 1 }) {
            if list.len() != layout.dims.len() {
                return Err(Error::state(
                    format!("state[{index}].{key}"),
                    format!(
                        "expected {} entries (one per dimension of {:?}), found {}",
                        layout.dims.len(),
                        layout.dims,
                        list.len()
                    ),
                ));
            }
            for (i, (entry, (&n, &pre))) in list
                .iter()
                .zip(layout.dims.iter().zip(&layout.preconditioned))
                .enumerate()
            {
                // Compared in place: this runs before every step, which allocates nothing.
                let found = entry.as_ref().map(Tensor::shape);
                let fits = match (found, pre) {
                    (Some(s), true) => s == [n, n],
                    (None, false) => true,
                    _ => false,
                };
                if !fits {
                    let expected = if pre {
                        format!("a {n}x{n} matrix")
                    } else {
                        format!("an empty tensor (dimension {i} of {n} is not preconditioned)")
                    };
                    return Err(Error::state(
                        format!("state[{index}].{key}[{i}]"),
                        format!(
                            "expected {expected} for these hyperparameters, found shape {:?}",
                            found.unwrap_or(&[0])
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn init_state(&self, param: &ParamMeta<'_>) -> SoapState {
        let dtype = param.dtype();
        // `check_param` has made sure the layout exists.
        let layout = self.layout(param.shape(), 0).unwrap_or(Layout {
            dims: Vec::new(),
            preconditioned: Vec::new(),
            nhwc: false,
            shape: Vec::new(),
        });
        let gg = layout
            .dims
            .iter()
            .zip(&layout.preconditioned)
            .map(|(&n, &pre)| pre.then(|| Tensor::zeros(dtype, &[n, n])))
            .collect();
        SoapState {
            exp_avg: param.zeros_like(),
            exp_avg_sq: param.zeros_like(),
            gg,
            q: Vec::new(),
            precondition_frequency: self.precondition_frequency,
            shampoo_beta: self.shampoo_beta(),
            ready: false,
            workspace: Workspace::default(),
        }
    }

    fn update<T: Element>(
        &self,
        param: &mut [T],
        grad: &[T],
        shape: &[usize],
        state: &mut SoapState,
    ) -> Result<()> {
        check_len("soap", "grad", param.len(), grad.len())?;
        // The layout is made once per state (and again if its
        // hyperparameters change), so that a step allocates nothing.
        let key = self.layout_key();
        let layout = match state.workspace.layout.take() {
            Some((k, layout)) if k == key => layout,
            _ => self.layout(shape, 0)?,
        };
        let result = self.update_in(&layout, param, grad, state);
        state.workspace.layout = Some((key, layout));
        result
    }
}

impl SoapConfig {
    /// [`Algorithm::update`] with the parameter's layout.
    fn update_in<T: Element>(
        &self,
        layout: &Layout,
        param: &mut [T],
        grad: &[T],
        state: &mut SoapState,
    ) -> Result<()> {
        let s = self.step.saturating_sub(1);
        if !state.ready {
            precondition(layout, grad, state, s)?;
        }
        if self.step <= 1 {
            return Ok(());
        }
        let (beta1, beta2) = self.betas;
        let mut step_size = self.lr;
        if self.correct_bias {
            let exponent = s.min(i32::MAX as u64) as i32;
            let bias_correction1 = 1.0 - beta1.powi(exponent);
            let bias_correction2_sq = (1.0 - beta2.powi(exponent)).sqrt();
            step_size *= bias_correction2_sq / bias_correction1;
        }
        let h = Scalars {
            one_minus_beta1: T::from_f64(1.0 - beta1),
            one_minus_beta2: T::from_f64(1.0 - beta2),
            eps: T::from_f64(self.eps),
            neg_step_size: T::from_f64(-step_size),
            decay: (self.weight_decay != 0.0)
                .then(|| T::from_f64(1.0 - self.weight_decay * self.lr)),
            maximize: self.maximize,
        };
        if layout.any_preconditioned() {
            preconditioned_update(layout, param, grad, state, &h)?;
        } else {
            identity_update(param, grad, state, &h)?;
        }
        if self.normalize_gradient {
            normalize(param, state, &h)?;
        }
        apply_update(param, state, &h)?;
        precondition(layout, grad, state, s)
    }
}

/// The scalars of one step, in the parameter's dtype.
struct Scalars<T> {
    one_minus_beta1: T,
    one_minus_beta2: T,
    eps: T,
    neg_step_size: T,
    decay: Option<T>,
    maximize: bool,
}

fn max_square(layout: &Layout) -> usize {
    let dims = layout.dims.iter().zip(&layout.preconditioned);
    dims.filter(|(_, &p)| p)
        .map(|(&n, _)| n * n)
        .max()
        .unwrap_or(0)
}

/// No dimension preconditioned: Adam's moments, the update `u` left in the
/// workspace's third buffer.
fn identity_update<T: Element>(
    param: &[T],
    grad: &[T],
    state: &mut SoapState,
    h: &Scalars<T>,
) -> Result<()> {
    let m = state.exp_avg.as_slice_mut::<T>()?;
    let v = state.exp_avg_sq.as_slice_mut::<T>()?;
    let [_, _, u, ..] = buffers::<T>(&mut state.workspace.tensors, param.len(), 0)?;
    soap::lerp_toward_signed(m, grad, h.one_minus_beta1, h.maximize);
    soap::lerp_toward_square(v, grad, h.one_minus_beta2);
    u.copy_from_slice(m);
    soap::divide_by_root(u, v, h.eps);
    Ok(())
}

/// `u = Pᵀ(P(m) / (√v + ε))` after the moments' updates, in the third buffer.
fn preconditioned_update<T: Element>(
    layout: &Layout,
    param: &[T],
    grad: &[T],
    state: &mut SoapState,
    h: &Scalars<T>,
) -> Result<()> {
    let SoapState {
        exp_avg,
        exp_avg_sq,
        q,
        workspace,
        ..
    } = state;
    let [a, b, c, ..] = buffers::<T>(&mut workspace.tensors, param.len(), max_square(layout))?;
    let (m, v) = (
        exp_avg.as_slice_mut::<T>()?,
        exp_avg_sq.as_slice_mut::<T>()?,
    );
    project(layout, q, grad, true, a, b)?;
    soap::lerp_toward_square(v, a, h.one_minus_beta2);
    soap::lerp_toward_signed(m, grad, h.one_minus_beta1, h.maximize);
    project(layout, q, m, true, a, b)?;
    soap::divide_by_root(a, v, h.eps);
    project(layout, q, a, false, c, b)
}

/// `u ← u / (√mean(u²) + ε)`.
fn normalize<T: Element>(param: &[T], state: &mut SoapState, h: &Scalars<T>) -> Result<()> {
    let [_, _, u, ..] = buffers::<T>(&mut state.workspace.tensors, param.len(), 0)?;
    let sum: f64 = u.iter().map(|&x| (x * x).to_f64()).sum();
    let mean = T::from_f64(sum) / T::from_f64(u.len().max(1) as f64);
    let d = mean.sqrt() + h.eps;
    for x in u.iter_mut() {
        *x = *x / d;
    }
    Ok(())
}

/// `θ ← (θ − step·u)·(1 − lr·λ)`.
fn apply_update<T: Element>(param: &mut [T], state: &mut SoapState, h: &Scalars<T>) -> Result<()> {
    let [_, _, u, ..] = buffers::<T>(&mut state.workspace.tensors, param.len(), 0)?;
    soap::add_scaled_then_decay(param, u, h.neg_step_size, h.decay);
    Ok(())
}

/// `(pre, n, post)`: dimension `axis` of `dims` and the products before and after it.
fn split(dims: &[usize], axis: usize) -> (usize, usize, usize) {
    let pre = dims[..axis].iter().product();
    let post = dims[axis + 1..].iter().product();
    (pre, dims[axis], post)
}

/// Mode product along `axis` (`dims`, row-major): `Qᵀ` (forward) or `Q`.
fn mode_product<T: Element>(
    dims: &[usize],
    axis: usize,
    q: &[T],
    forward: bool,
    src: &[T],
    dst: &mut [T],
) {
    let (pre, n, post) = split(dims, axis);
    let qv = View::new(q, n, n);
    if post == 1 {
        // Y = X·Q (forward) or X·Qᵀ, X being pre × n.
        let qv = if forward { qv } else { qv.t() };
        T::matmul(dst, false, View::new(src, pre, n), qv);
        return;
    }
    let qv = if forward { qv.t() } else { qv };
    let block = n * post;
    for (s, d) in src.chunks_exact(block).zip(dst.chunks_exact_mut(block)) {
        T::matmul(d, false, qv, View::new(s, n, post));
    }
}

/// NHWC `[a, b, c, d]` read as `[a, d, b, c]` (`to_merged`), or back.
fn permute_nhwc<T: Element>(shape: &[usize], src: &[T], dst: &mut [T], to_merged: bool) {
    let (a, b, c, d) = (shape[0], shape[1], shape[2], shape[3]);
    for i in 0..a {
        for j in 0..b {
            for k in 0..c {
                for l in 0..d {
                    let nhwc = ((i * b + j) * c + k) * d + l;
                    let nchw = ((i * d + l) * b + j) * c + k;
                    if to_merged {
                        dst[nchw] = src[nhwc];
                    } else {
                        dst[nhwc] = src[nchw];
                    }
                }
            }
        }
    }
}

/// `out = P(x)` (forward) or `Pᵀ(x)`, `x` and `out` in the parameter's
/// layout; `tmp` is scratch. The operations alternate between the two
/// buffers so that the last writes `out`.
fn project<T: Element>(
    layout: &Layout,
    q: &[Option<Tensor>],
    x: &[T],
    forward: bool,
    out: &mut [T],
    tmp: &mut [T],
) -> Result<()> {
    let mut axes = (0..layout.dims.len()).filter(|&i| layout.preconditioned[i]);
    let nhwc = usize::from(layout.nhwc);
    let total = axes.clone().count() + 2 * nhwc;
    if total == 0 {
        out.copy_from_slice(x);
        return Ok(());
    }
    for k in 0..total {
        let to_out = (total - 1 - k).is_multiple_of(2);
        let (src, dst): (&[T], &mut [T]) = match (k, to_out) {
            (0, true) => (x, &mut *out),
            (0, false) => (x, &mut *tmp),
            (_, true) => (&*tmp, &mut *out),
            (_, false) => (&*out, &mut *tmp),
        };
        if nhwc == 1 && k == 0 {
            permute_nhwc(&layout.shape, src, dst, true);
        } else if nhwc == 1 && k == total - 1 {
            permute_nhwc(&layout.shape, src, dst, false);
        } else {
            let Some(axis) = axes.next() else {
                unreachable!("one mode product per preconditioned axis")
            };
            let basis = q[axis].as_ref().ok_or_else(|| {
                Error::state(
                    format!("Q[{axis}]"),
                    "missing the basis of a preconditioned dimension",
                )
            })?;
            mode_product(
                &layout.dims,
                axis,
                basis.as_slice::<T>()?,
                forward,
                src,
                dst,
            );
        }
    }
    Ok(())
}

/// The reference's `update_pre_conditioner` with `step = s`: the statistics
/// take in `grad`; the bases are made if there are none, and updated by one
/// power iteration every `precondition_frequency` steps.
fn precondition<T: Element>(
    layout: &Layout,
    grad: &[T],
    state: &mut SoapState,
    s: u64,
) -> Result<()> {
    if !layout.any_preconditioned() {
        if !state.ready {
            state.q = vec![None; layout.dims.len()];
            state.ready = true;
        }
        return Ok(());
    }
    let numel = grad.len();
    let SoapState {
        exp_avg_sq,
        gg,
        q,
        precondition_frequency,
        shampoo_beta,
        ready,
        workspace,
        ..
    } = state;
    let Workspace {
        tensors,
        order,
        estimates,
        ..
    } = workspace;
    let [a, b, _, m1, m2] = buffers::<T>(tensors, numel, max_square(layout))?;
    let merged: &[T] = if layout.nhwc {
        permute_nhwc(&layout.shape, grad, a, true);
        a
    } else {
        grad
    };
    let weight = T::from_f64(1.0 - *shampoo_beta);
    for (axis, g) in gg.iter_mut().enumerate() {
        let Some(g) = g else { continue };
        let (pre, n, post) = split(&layout.dims, axis);
        let outer = &mut m1[..n * n];
        if post == 1 {
            let x = View::new(merged, pre, n);
            T::matmul(outer, false, x.t(), x);
        } else {
            outer.fill(T::ZERO);
            for block in merged.chunks_exact(n * post) {
                let x = View::new(block, n, post);
                T::matmul(outer, true, x, x.t());
            }
        }
        soap::lerp_toward(g.as_slice_mut::<T>()?, outer, weight);
    }
    if !*ready {
        *q = gg
            .iter()
            .map(|g| g.as_ref().map(|g| eigenbasis::<T>(g)).transpose())
            .collect::<Result<_>>()?;
        *ready = true;
    }
    if s > 0 && s.is_multiple_of(*precondition_frequency) {
        let v = exp_avg_sq.as_slice_mut::<T>()?;
        for (axis, (g, basis)) in gg.iter().zip(q.iter_mut()).enumerate() {
            let (Some(g), Some(basis)) = (g, basis) else {
                continue;
            };
            let (pre, n, post) = split(&layout.dims, axis);
            let (qs, gs) = (basis.as_slice_mut::<T>()?, g.as_slice::<T>()?);
            let product = &mut m1[..n * n];
            T::matmul(product, false, View::new(gs, n, n), View::new(qs, n, n));
            estimates.clear();
            for j in 0..n {
                let mut e = T::ZERO;
                for r in 0..n {
                    e = e + qs[r * n + j] * product[r * n + j];
                }
                estimates.push(e.to_f64());
            }
            order.clear();
            order.extend(0..n);
            order.sort_by(|&x, &y| estimates[y].total_cmp(&estimates[x]));
            // v's entries along the axis, sorted alike (in the merged view).
            if layout.nhwc {
                permute_nhwc(&layout.shape, v, a, true);
            } else {
                a.copy_from_slice(v);
            }
            let target: &mut [T] = if layout.nhwc { &mut *b } else { &mut *v };
            for p in 0..pre {
                for (j, &o) in order.iter().enumerate() {
                    let from = (p * n + o) * post;
                    let to = (p * n + j) * post;
                    target[to..to + post].copy_from_slice(&a[from..from + post]);
                }
            }
            if layout.nhwc {
                permute_nhwc(&layout.shape, b, v, false);
            }
            let power = &mut m2[..n * n];
            for r in 0..n {
                for (j, &o) in order.iter().enumerate() {
                    power[r * n + j] = product[r * n + o];
                }
            }
            T::qr_q_f32(power, n, qs);
        }
    }
    Ok(())
}

/// The eigenvectors of `G + 10⁻³⁰·I`, largest eigenvalue first; NaNs where
/// `G` is not finite or no solver converges (the reference retries in f64,
/// as here, and then raises).
fn eigenbasis<T: Element>(g: &Tensor) -> Result<Tensor> {
    let n = g.shape()[0];
    let mut m = g.as_slice::<T>()?.to_vec();
    let tiny = T::from_f64(1e-30);
    for i in 0..n {
        m[i * n + i] = m[i * n + i] + tiny;
    }
    let mut q = vec![T::from_f64(f64::NAN); n * n];
    if m.iter().all(|x| x.to_f64().is_finite()) && !T::eigh_descending(&m, n, &mut q) {
        let wide: Vec<f64> = m.iter().map(|x| x.to_f64()).collect();
        let mut q64 = vec![f64::NAN; n * n];
        if !f64::eigh_descending(&wide, n, &mut q64) {
            q64.fill(f64::NAN);
        }
        for (q, w) in q.iter_mut().zip(q64) {
            *q = T::from_f64(w);
        }
    }
    Tensor::from_vec(q, &[n, n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Optimizer, Param};

    #[test]
    fn a_parameter_merge_dims_cannot_merge_is_refused_before_anything_moves() {
        let config = SoapConfig {
            merge_dims: true,
            max_precondition_dim: 2,
            ..Default::default()
        };
        // [1, 2] merges into one dimension: the reference's reshape fails.
        let err = Soap::new([Param::zeros::<f32>(&[1, 2])], config.clone()).unwrap_err();
        assert!(
            matches!(err, Error::MergeDimsUnsupported { param: 0, .. }),
            "{err:?}"
        );

        // Made valid, then changed before the first step: the step refuses
        // it before the other parameter, or the group's step, moves.
        let (fine, bad) = (Param::zeros::<f32>(&[3]), Param::zeros::<f32>(&[1, 2]));
        let unmerged = SoapConfig {
            merge_dims: false,
            ..config
        };
        let mut opt = Soap::new([fine.clone(), bad.clone()], unmerged).unwrap();
        opt.set_hyperparameter(0, "merge_dims", true.into())
            .unwrap();
        for p in [&fine, &bad] {
            let n = p.value().numel();
            p.set_grad(Tensor::from_vec(vec![1.0f32; n], p.value().shape()).unwrap())
                .unwrap();
        }
        let err = opt.step().unwrap_err();
        assert!(
            matches!(err, Error::MergeDimsUnsupported { param: 1, .. }),
            "{err:?}"
        );
        assert!(opt.state(&fine).is_none());
        assert_eq!(opt.hyperparameter(0, "step"), None);
    }
}
