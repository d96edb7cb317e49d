//! What an algorithm module supplies: its hyperparameters and its update.
//!
//! [`Hyperparameters`] is a param group's settings (torch's arguments,
//! defaults, checks and learning rate); every optimizer has one, LBFGS
//! included. [`Algorithm`] adds a per-parameter state and the update of one
//! parameter: what [`Optim`](crate::Optim) needs to run the algorithm over
//! param groups. The state's saved form is a [`ParamState`].

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::group::{ParamGroup, Precision};
use crate::param::SparseGrad;
use crate::slot::{ParamMeta, ParamSlot};
use crate::state::ParamState;
use crate::tensor::{Element, Storage};

/// A param group's hyperparameters: torch's argument names and defaults (via
/// serde), torch's checks, and the learning rate that schedulers move.
pub trait Hyperparameters:
    Clone + Debug + Default + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// torch's class name (or the reference implementation's).
    const NAME: &'static str;
    /// The implementation whose numbers the fixtures hold.
    const REFERENCE: &'static str = "torch 2.15 (torch.optim)";
    /// The implementation flags torch keeps in this optimizer's groups.
    const TORCH_FLAGS: &'static [&'static str];
    /// Hyperparameters that torch's `__setstate__` fills in when an older
    /// checkpoint lacks them; any other missing one fails `load_state_dict`.
    const OPTIONAL_KEYS: &'static [&'static str];
    /// Hyperparameters a group holds only once they are set, as
    /// pytorch-optimizer's groups hold `cautious` only when it is passed and
    /// `step` only from the first step: serialized only then
    /// (`skip_serializing_if`), and known keys when present. By default none.
    const KEYS_WHEN_SET: &'static [&'static str] = &[];

    /// torch's constructor checks, with torch's messages.
    fn validate(&self) -> Result<()>;
    /// The learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate.
    fn set_lr(&mut self, lr: f64);
    /// The checks of a group's hyperparameters (from a spec, or set by
    /// name), where they differ from the constructor's: Prodigy's groups may
    /// have an lr of 0. By default [`Hyperparameters::validate`].
    fn validate_group(&self) -> Result<()> {
        self.validate()
    }
    /// Fills in what torch's constructor derives from other arguments
    /// (LBFGS's `max_eval`), after a group is merged or loaded. By default nothing.
    fn resolve(&mut self) {}
    /// Takes what a group keeps from the optimizer's defaults rather than
    /// from its own settings (Lion's constructor lr), when the group is
    /// made from them. By default nothing.
    fn inherit(&mut self, defaults: &Self) {
        let _ = defaults;
    }
    /// Takes, from the live group a saved one replaces, what a state_dict
    /// does not hold (Lion's optimizer-level arguments). By default nothing.
    fn keep_unsaved(&mut self, live: &Self) {
        let _ = live;
    }
}

/// Implements [`Hyperparameters`] for a config struct with an `lr: f64`
/// field: torch's class name, flags and optional keys, and the checks;
/// `lr` and `set_lr` are written here once for every algorithm.
///
/// ```ignore
/// hyperparameters!(AdamConfig {
///     name: "Adam",
///     torch_flags: &["foreach", "capturable", "differentiable", "fused"],
///     optional_keys: &["amsgrad", "maximize", "decoupled_weight_decay"],
///     fn validate(&self) -> Result<()> { check_adam_like(self.lr, self.eps, self.betas, self.weight_decay) }
/// });
/// ```
#[macro_export]
#[doc(hidden)]
macro_rules! hyperparameters {
    ($ty:ident {
        name: $name:literal,
        $(reference: $reference:literal,)?
        $(keys_when_set: $when_set:expr,)?
        torch_flags: $flags:expr,
        optional_keys: $keys:expr,
        $($rest:tt)*
    }) => {
        impl $crate::Hyperparameters for $ty {
            const NAME: &'static str = $name;
            $(const REFERENCE: &'static str = $reference;)?
            const TORCH_FLAGS: &'static [&'static str] = $flags;
            const OPTIONAL_KEYS: &'static [&'static str] = $keys;
            $(const KEYS_WHEN_SET: &'static [&'static str] = $when_set;)?

            $($rest)*

            fn lr(&self) -> f64 {
                self.lr
            }

            fn set_lr(&mut self, lr: f64) {
                self.lr = lr;
            }
        }
    };
}

/// Inside an `impl Algorithm`: [`Algorithm::REDUCED`] true, and
/// [`Algorithm::update`] and [`Algorithm::update_reduced`] both the
/// algorithm's inherent `fn dense<S: Storage>(&self, param: &mut [S], grad:
/// &[S], shape: &[usize], state: &mut State) -> Result<()>`, written once
/// for every storage type. `dense_in_every_dtype!(State, fused)` is for the
/// optimizers with torch's fused kernels: both call `dense_scaled(.., None)`,
/// which takes AMP's `grad_scale` last, and [`Algorithm::update_scaled`]
/// passes it; [`Algorithm::takes_grad_scale`] is `fused == Some(true)`.
#[macro_export]
#[doc(hidden)]
macro_rules! dense_in_every_dtype {
    // Both updates call `$dense` (with `$arg` after the state, if any).
    (@updates $state:ty, $dense:ident $(, $arg:expr)?) => {
        const REDUCED: bool = true;

        fn update<T: $crate::Element>(
            &self,
            param: &mut [T],
            grad: &[T],
            shape: &[usize],
            state: &mut $state,
        ) -> $crate::Result<()> {
            self.$dense(param, grad, shape, state $(, $arg)?)
        }

        fn update_reduced<S: $crate::Storage>(
            &self,
            param: &mut [S],
            grad: &[S],
            shape: &[usize],
            state: &mut $state,
        ) -> $crate::Result<()> {
            self.$dense(param, grad, shape, state $(, $arg)?)
        }
    };
    // The fused optimizers: `dense_scaled` takes AMP's grad_scale too.
    ($state:ty, fused) => {
        $crate::dense_in_every_dtype!(@updates $state, dense_scaled, None);

        fn takes_grad_scale(&self) -> bool {
            self.fused == Some(true)
        }

        fn update_scaled<S: $crate::Storage>(
            &self,
            param: &mut [S],
            grad: &[S],
            shape: &[usize],
            state: &mut $state,
            grad_scale: f32,
        ) -> $crate::Result<()> {
            self.dense_scaled(param, grad, shape, state, Some(grad_scale))
        }
    };
    ($state:ty) => {
        $crate::dense_in_every_dtype!(@updates $state, dense);
    };
}

/// What one parameter adds to a step's totals in [`Algorithm::gather`]: two
/// sums the reference keeps in Python floats, added in parameter order.
pub type Totals = [f64; 2];

/// An optimization algorithm whose update is per parameter: its value is a
/// param group's hyperparameters.
pub trait Algorithm: Hyperparameters {
    /// Whether the constructor creates every parameter's state at once, as
    /// torch's Adagrad does (groups added later still get it lazily, as in torch).
    const EAGER_STATE: bool = false;
    /// Per-parameter state.
    type State: ParamState;

    /// What a group does once per step before its parameters' updates
    /// (pytorch-optimizer counts steps per group, not per parameter): called
    /// for every group, after every gradient is checked. By default nothing.
    fn begin_step(&mut self) {}

    /// Whether a step first needs the global norm of every gradient
    /// (pytorch-optimizer's `get_global_gradient_norm`: LAMB's `pre_norm`,
    /// Adan's `max_grad_norm`). Asked of the optimizer's defaults, whose
    /// settings the reference reads. By default no.
    fn needs_global_grad_norm(&self) -> bool {
        false
    }

    /// Takes the step's squared global gradient norm, `Σᵢ ‖gᵢ‖²` over every
    /// group's gradients as the reference computes it (each norm in its
    /// gradient's dtype, then squared and summed in `f32`), with the
    /// defaults. Called for every group, before [`Algorithm::begin_step`],
    /// when the defaults [need it](Algorithm::needs_global_grad_norm).
    /// By default nothing.
    fn set_global_grad_norm(&mut self, defaults: &Self, sq_norm: f32) {
        let _ = (defaults, sq_norm);
    }

    /// Whether a step is two passes with sums over every parameter between
    /// them, as Prodigy's D estimate couples every parameter of every group:
    /// [`Algorithm::begin_gather`] with every group, then
    /// [`Algorithm::gather`] for each parameter with a gradient (its state
    /// created first), their [`Totals`] added in parameter order,
    /// [`Algorithm::end_gather`], and then [`Algorithm::update`] as for any
    /// algorithm, unless `end_gather` ends the step there. By default no.
    const GATHERS: bool = false;

    /// Before a gathering step's first pass, after every gradient is checked:
    /// reads what the step needs from every group (Prodigy's `d` from the
    /// first, the largest lr) into each group's workspace. An error stops
    /// the step before anything but workspaces changed. By default nothing.
    fn begin_gather<P: ParamSlot>(groups: &mut [ParamGroup<Self, P>]) -> Result<()> {
        let _ = groups;
        Ok(())
    }

    /// A gathering step's first pass over one parameter: may update its
    /// state (not the parameter), and returns what it adds to the totals.
    /// By default nothing.
    fn gather<T: Element>(
        &self,
        param: &[T],
        grad: &[T],
        state: &mut Self::State,
    ) -> Result<Totals> {
        let _ = (param, grad, state);
        Ok([0.0; 2])
    }

    /// After every parameter's [`Algorithm::gather`], with their totals:
    /// sets what the second pass needs in every group, and returns whether
    /// there is a second pass (Prodigy's step ends early while its
    /// denominator is 0). By default there is.
    fn end_gather<P: ParamSlot>(groups: &mut [ParamGroup<Self, P>], totals: Totals) -> bool {
        let _ = (groups, totals);
        true
    }

    /// Whether a parameter's state fits these hyperparameters, where its
    /// shapes depend on them (Prodigy's `s` has one element per `slice_p`):
    /// checked when a state_dict is loaded and before every step, so a
    /// misfit is an error before anything changes. `index` is the
    /// parameter's state_dict number. By default every state fits.
    fn check_state(&self, state: &Self::State, index: usize) -> Result<()> {
        let _ = (state, index);
        Ok(())
    }

    /// The state of a parameter on its first step.
    fn init_state(&self, param: &ParamMeta<'_>) -> Self::State;

    /// The state of a parameter on its first step, from its values as the
    /// step finds them (Schedule-Free's `z` starts as a copy of θ). By
    /// default [`Algorithm::init_state`].
    fn init_state_from<T: Element>(&self, values: &[T], param: &ParamMeta<'_>) -> Self::State {
        let _ = values;
        self.init_state(param)
    }

    /// Whether the group is in training mode, for an algorithm whose
    /// parameters differ between training and evaluation (Schedule-Free's
    /// `train_mode`); `None` (the default) for the others.
    fn train_mode(&self) -> Option<bool> {
        None
    }

    /// Moves one parameter to its training (`train`) or evaluation point,
    /// and is called for every parameter with a state when a group in the
    /// other mode switches; then [`Algorithm::set_train_mode`] records it.
    /// By default nothing moves.
    fn switch_mode<T: Element>(
        &self,
        train: bool,
        param: &mut [T],
        state: &Self::State,
    ) -> Result<()> {
        let _ = (train, param, state);
        Ok(())
    }

    /// Records the group's mode (see [`Algorithm::train_mode`]).
    fn set_train_mode(&mut self, train: bool) {
        let _ = train;
    }
    /// One update of one parameter of `shape` with a dense gradient. The
    /// state's tensors have the parameter's dtype `T` and shape.
    fn update<T: Element>(
        &self,
        param: &mut [T],
        grad: &[T],
        shape: &[usize],
        state: &mut Self::State,
    ) -> Result<()>;

    /// Whether the algorithm steps `bfloat16` and `float16` parameters, through
    /// [`Algorithm::update_reduced`]. By default not: a 16-bit parameter is
    /// refused when its group is added ([`check_dtype`]).
    const REDUCED: bool = false;

    /// One update of a 16-bit parameter (`S` is `bf16` or `f16`) with a
    /// dense gradient, as torch's default (single-tensor) path computes it:
    /// each of its tensor operations in `f32`, with Python scalars as
    /// `f32`, and its result rounded to the parameter's dtype; the state's
    /// tensors are of that dtype too. Called only when
    /// [`Algorithm::REDUCED`]; by default the dtype is refused.
    fn update_reduced<S: Storage>(
        &self,
        param: &mut [S],
        grad: &[S],
        shape: &[usize],
        state: &mut Self::State,
    ) -> Result<()> {
        let _ = (param, grad, shape, state);
        Err(reduced_unsupported::<Self>(
            "a parameter".into(),
            S::DTYPE,
            widens(self),
        ))
    }

    /// Whether this group's step takes AMP's gradient scaling
    /// ([`Optimizer::step_scaled`](crate::Optimizer::step_scaled)): torch's
    /// fused kernels do. By default not.
    fn takes_grad_scale(&self) -> bool {
        false
    }

    /// One update with a dense gradient that is `grad_scale` times the
    /// true one, divided inside the update as torch's fused kernels divide
    /// it (in the type the step computes in). Called only where
    /// [`Algorithm::takes_grad_scale`]; by default an error.
    fn update_scaled<S: Storage>(
        &self,
        param: &mut [S],
        grad: &[S],
        shape: &[usize],
        state: &mut Self::State,
        grad_scale: f32,
    ) -> Result<()> {
        let _ = (param, grad, shape, state, grad_scale);
        Err(Error::GradScalingUnsupported {
            optimizer: Self::NAME,
        })
    }

    /// Whether a parameter of `shape` can be optimized at all (Muon takes
    /// only matrices). Checked when a group is added, so a bad parameter
    /// never reaches a step. By default every shape is.
    fn check_param(&self, shape: &[usize], param: usize) -> Result<()> {
        let _ = (shape, param);
        Ok(())
    }

    /// Whether a gradient of this kind (sparse or dense) is usable for
    /// parameter number `param` with these hyperparameters. Checked for every
    /// parameter before a step changes anything. By default only dense
    /// gradients are, as in most of torch's optimizers.
    fn check_grad(&self, sparse: bool, param: usize) -> Result<()> {
        if sparse {
            Err(Error::SparseGradUnsupported {
                optimizer: Self::NAME,
                param,
            })
        } else {
            Ok(())
        }
    }

    /// One update from a sparse gradient, as handed in (rows unsorted and
    /// repeated; [`SparseGrad::coalesced`] gives torch's `coalesce()`, which
    /// most of torch's sparse paths start with). Only its rows may change.
    /// Called only when [`Algorithm::check_grad`] accepts sparse gradients;
    /// `index` is the parameter's state_dict number, for errors.
    fn update_sparse<T: Element>(
        &self,
        param: &mut [T],
        shape: &[usize],
        grad: &SparseGrad,
        state: &mut Self::State,
        index: usize,
    ) -> Result<()> {
        let _ = (param, shape, grad, state);
        self.check_grad(true, index)
    }
}

/// The refusal of a 16-bit parameter by an algorithm that does not step
/// it: `widens` when it would, in a group with one of the float32 modes.
pub(crate) fn reduced_unsupported<A: Hyperparameters>(
    what: String,
    dtype: Dtype,
    widens: bool,
) -> Error {
    Error::DtypeUnsupported {
        what,
        dtype,
        refused_by: A::NAME,
        supported: if widens {
            "float32 and float64; bfloat16 and float16 in a group with master_weights \
             or kahan_summation, bfloat16 with stochastic_rounding"
        } else {
            "float32 and float64"
        },
    }
}

/// Whether `A` steps a 16-bit parameter in a group with one of the float32
/// modes (master weights, stochastic rounding, Kahan summation), which run
/// its float32 update on the widened parameter: every algorithm whose step
/// is one update per parameter, not Prodigy's two passes over every
/// parameter nor Schedule-Free's train/eval switch of the stored values.
pub(crate) fn widens<A: Algorithm>(options: &A) -> bool {
    !A::GATHERS && options.train_mode().is_none()
}

/// Whether parameter number `param`, of `dtype`, in a group written back
/// by `precision`, is one `A` steps: checked when its group is added, when
/// a state_dict is loaded and before its first step, so that a refused
/// dtype never reaches an update. A 16-bit parameter is stepped by the
/// [`Algorithm::REDUCED`] algorithms in any group, and by every algorithm
/// that [`widens`] in a group with a float32 mode.
pub(crate) fn check_dtype<A: Algorithm>(
    options: &A,
    dtype: Dtype,
    precision: Precision,
    param: usize,
) -> Result<()> {
    let widened = precision != Precision::Plain && widens(options);
    if dtype.is_reduced() && !A::REDUCED && !widened {
        return Err(reduced_unsupported::<A>(
            format!("parameter {param}"),
            dtype,
            widens(options),
        ));
    }
    Ok(())
}

/// The check of SGD and Adagrad, whose sparse path cannot add a weight
/// decay (torch fails inside the step: `add(sparse, dense) is not
/// supported`) and whose fused kernel takes no sparse gradient (torch:
/// "`_fused_sgd` does not support sparse gradients"): any dense gradient,
/// a sparse one only with neither.
pub(crate) fn sparse_without_weight_decay<A: Hyperparameters>(
    sparse: bool,
    weight_decay: f64,
    fused: Option<bool>,
    param: usize,
) -> Result<()> {
    let option = match (weight_decay != 0.0, fused == Some(true)) {
        (_, true) => "fused",
        (true, false) => "weight_decay",
        (false, false) => return Ok(()),
    };
    if sparse {
        return Err(Error::SparseGradIncompatible {
            optimizer: A::NAME,
            option,
            param,
        });
    }
    Ok(())
}
