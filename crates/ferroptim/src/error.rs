//! The one error type of the crate.
//!
//! Every fallible operation returns [`Result`]. Messages say what was wrong
//! and what was expected; where torch raises for the same input, the message
//! is torch's (so `"Invalid learning rate: -0.1"` reads the same in both).

use crate::dtype::Dtype;

/// `Result` with ferroptim's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ferroptim.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A hyperparameter is out of its valid range; the message is torch's.
    #[error("{message}")]
    InvalidHyperparameter {
        /// torch's argument name, e.g. `"lr"` or `"betas"`.
        name: &'static str,
        /// The message torch raises for this input.
        message: String,
    },

    /// A configuration (JSON or group overrides) could not be read.
    #[error("invalid {optimizer} configuration: {reason}")]
    InvalidConfig {
        /// The optimizer's torch name.
        optimizer: &'static str,
        /// What serde or the merge found wrong.
        reason: String,
    },

    /// A param group names a hyperparameter this optimizer does not have.
    #[error("{optimizer} has no hyperparameter {key:?}; expected one of: {expected}")]
    UnknownHyperparameter {
        /// The optimizer's torch name.
        optimizer: &'static str,
        /// The key given.
        key: String,
        /// The keys this optimizer has, comma separated.
        expected: String,
    },

    /// `build` was asked for an optimizer ferroptim does not have.
    #[error("unknown optimizer {name:?}; expected one of: {expected}")]
    UnknownOptimizer {
        /// The name given.
        name: String,
        /// The names ferroptim knows, comma separated.
        expected: String,
    },

    /// The optimizer was given no parameters at all (torch's message).
    #[error("optimizer got an empty parameter list")]
    EmptyParamList,

    /// The same parameter appears twice in one group.
    #[error(
        "optimizer contains a parameter group with duplicate parameters: \
         entries {first} and {second} of the group are the same parameter"
    )]
    DuplicateParamInGroup {
        /// Position of the first occurrence in the group.
        first: usize,
        /// Position of the repeat.
        second: usize,
    },

    /// A parameter of a new group is already in another group (torch's message).
    #[error("some parameters appear in more than one parameter group")]
    DuplicateParamAcrossGroups,

    /// Some parameters of an optimizer have names and others do not (torch:
    /// "all optimizer params should be with/without names").
    #[error(
        "all optimizer params should be with/without names: group {group} is {found}, \
         the groups before it are {expected}"
    )]
    MixedParamNames {
        /// The group that differs.
        group: usize,
        /// `"with names"` or `"without names"`: what the earlier groups are.
        expected: &'static str,
        /// What this group is.
        found: &'static str,
    },

    /// A saved parameter's name differs from the name of the parameter it
    /// would load into: the checkpoint was made for other parameters, or in
    /// another order.
    #[error(
        "param_groups[{group}].param_names[{index}] is {found:?} in the state_dict, \
         but this optimizer's parameter there is {expected:?}"
    )]
    ParamNameMismatch {
        /// The group.
        group: usize,
        /// The position in the group.
        index: usize,
        /// This optimizer's name for the parameter.
        expected: String,
        /// The name in the state_dict.
        found: String,
    },

    /// A step pre-hook refused the step; nothing changed.
    #[error("a step pre-hook stopped the step: {0}")]
    Vetoed(String),

    /// Tensor data does not fill its shape.
    #[error("shape {shape:?} holds {expected} elements, but {actual} values were given")]
    ShapeDataMismatch {
        /// The shape asked for.
        shape: Vec<usize>,
        /// Its number of elements.
        expected: usize,
        /// The number of values given.
        actual: usize,
    },

    /// Two tensors that must have the same shape do not.
    #[error("{what} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// What was checked, e.g. `"gradient of parameter 3"`.
        what: String,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },

    /// A tensor has a different dtype than required.
    #[error("{what} has dtype {found}, expected {expected}")]
    DtypeMismatch {
        /// What was checked.
        what: String,
        /// The dtype required.
        expected: Dtype,
        /// The dtype found.
        found: Dtype,
    },

    /// A tensor's dtype is one this path does not run.
    #[error("{what} has dtype {dtype}, which {refused_by} does not take (it takes {supported})")]
    DtypeUnsupported {
        /// What was checked, e.g. `"parameter 3"`.
        what: String,
        /// The dtype found.
        dtype: Dtype,
        /// What refused it, e.g. `"LBFGS"`.
        refused_by: &'static str,
        /// What it takes instead.
        supported: &'static str,
    },

    /// Slices handed to a kernel differ in length.
    #[error("kernel {kernel}: slice {name} has {found} elements, expected {expected}")]
    LengthMismatch {
        /// The kernel's name.
        kernel: &'static str,
        /// The argument's name.
        name: &'static str,
        /// The parameter slice's length.
        expected: usize,
        /// The argument's length.
        found: usize,
    },

    /// A param group index is out of range.
    #[error("no param group {group}: the optimizer has {groups}")]
    NoSuchGroup {
        /// The index asked for.
        group: usize,
        /// The number of groups.
        groups: usize,
    },

    /// This optimizer takes only parameters of a certain rank (torch's Muon
    /// raises too, in its constructor).
    #[error("{optimizer} only supports {expected} parameters whereas we found a parameter with size: {shape:?} (parameter {param})")]
    ParamShapeUnsupported {
        /// The optimizer's torch name.
        optimizer: &'static str,
        /// The parameter's index in state_dict numbering.
        param: usize,
        /// Its shape.
        shape: Vec<usize>,
        /// The kind of parameter the optimizer takes, e.g. `"2D"`.
        expected: &'static str,
    },

    /// A learning-rate scheduler was given arguments it cannot use, or was
    /// used in a way it cannot follow (the message is torch's where torch raises).
    #[error("{scheduler}: {reason}")]
    Scheduler {
        /// The scheduler's torch name, e.g. `"StepLR"`.
        scheduler: &'static str,
        /// What was wrong and what was expected.
        reason: String,
    },

    /// A step in evaluation mode, by an optimizer whose parameters differ
    /// between the two (Schedule-Free); nothing changed.
    #[error(
        "{optimizer}: param group {group} was not in train mode when step was called; \
         call train() before training steps (and eval() before evaluating or saving)"
    )]
    NotInTrainMode {
        /// The optimizer's name.
        optimizer: &'static str,
        /// The first group in evaluation mode.
        group: usize,
    },

    /// A step of an optimizer whose groups share one step size (Prodigy's
    /// `d`) with a group at another lr than the largest, other than 0;
    /// nothing changed.
    #[error(
        "{optimizer}: param group {group} has lr {lr}, the largest is {max}: setting different \
         lr values in different parameter groups is only supported for values of 0"
    )]
    MixedGroupLr {
        /// The optimizer's name.
        optimizer: &'static str,
        /// The first such group.
        group: usize,
        /// Its lr.
        lr: f64,
        /// The largest lr of any group.
        max: f64,
    },

    /// SOAP's `merge_dims` would merge a parameter's dimensions into one,
    /// which the reference reshapes to `[1]` and fails on.
    #[error("{optimizer}: merge_dims cannot merge parameter {param} of shape {shape:?}: with max_precondition_dim {max_precondition_dim} its dimensions merge into one, which the reference reshapes to [1] and fails on; set merge_dims to false, or max_precondition_dim below its number of elements")]
    MergeDimsUnsupported {
        /// The optimizer.
        optimizer: &'static str,
        /// The parameter's index in group order.
        param: usize,
        /// Its shape.
        shape: Vec<usize>,
        /// The group's `max_precondition_dim`.
        max_precondition_dim: usize,
    },

    /// This optimizer does not take sparse gradients (torch raises too).
    #[error("{optimizer} does not support sparse gradients (parameter {param})")]
    SparseGradUnsupported {
        /// The optimizer's torch name.
        optimizer: &'static str,
        /// The parameter's index in state_dict numbering.
        param: usize,
    },

    /// This optimizer takes only sparse gradients (torch's SparseAdam raises too).
    #[error("{optimizer} does not support dense gradients (parameter {param}), please consider Adam instead")]
    DenseGradUnsupported {
        /// The optimizer's torch name.
        optimizer: &'static str,
        /// The parameter's index in state_dict numbering.
        param: usize,
    },

    /// `step()` was called on an optimizer that must re-evaluate the objective (LBFGS).
    #[error("{optimizer} needs a closure that re-evaluates the loss and gradients: call step_with_closure")]
    ClosureRequired {
        /// The optimizer's torch name.
        optimizer: &'static str,
    },

    /// `step_scaled` (AMP's `grad_scale`/`found_inf`) on a group whose
    /// step does not take them: torch's fused kernels do, nothing else.
    #[error("{optimizer}: grad_scale and found_inf are taken by torch's fused kernels only (fused=True with Adam, AdamW, SGD or Adagrad, in groups without master_weights, stochastic_rounding or kahan_summation); unscale the gradients first and call step_if_finite")]
    GradScalingUnsupported {
        /// The optimizer's torch name.
        optimizer: &'static str,
    },

    /// A sparse gradient met a hyperparameter that needs dense ones (torch:
    /// "weight_decay option is not compatible with sparse gradients").
    #[error("{optimizer}: the {option} option is not compatible with sparse gradients (parameter {param}); turn it off (0, or fused=None) or pass a dense gradient")]
    SparseGradIncompatible {
        /// The optimizer's torch name.
        optimizer: &'static str,
        /// The hyperparameter that must be off (0, or `fused` not true) with sparse gradients.
        option: &'static str,
        /// The parameter's index in state_dict numbering.
        param: usize,
    },

    /// `clip_grad_norm` with `error_if_nonfinite` met a NaN or infinite total norm.
    #[error("The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot be clipped. To disable this error and scale the gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")]
    NonFiniteNorm {
        /// The order of the norm, as Python writes it.
        norm_type: String,
    },

    /// An infinity norm (or `-inf`) was asked of an empty gradient, which has
    /// no maximum or minimum (torch refuses too).
    #[error("cannot compute the {norm_type} norm of the empty gradient of parameter {param}: it has no elements to take the maximum or minimum of")]
    EmptyNorm {
        /// `inf` or `-inf`.
        norm_type: String,
        /// The parameter's position in the list given.
        param: usize,
    },

    /// `load_state_dict` got another number of param groups (torch's message, with counts).
    #[error(
        "loaded state dict has a different number of parameter groups: \
         it has {found}, the optimizer has {expected}"
    )]
    GroupCountMismatch {
        /// Groups in the optimizer.
        expected: usize,
        /// Groups in the state_dict.
        found: usize,
    },

    /// `load_state_dict` got a group of another size (torch's message, with sizes).
    #[error(
        "loaded state dict contains a parameter group that doesn't match the size of \
         optimizer's group: group {group} has {found} params, the optimizer's has {expected}"
    )]
    GroupSizeMismatch {
        /// The group's index.
        group: usize,
        /// Its size in the optimizer.
        expected: usize,
        /// Its size in the state_dict.
        found: usize,
    },

    /// A state_dict group lacks a hyperparameter this optimizer needs.
    #[error("state_dict param_groups[{group}] has no {key:?}, which {optimizer} needs")]
    MissingGroupKey {
        /// The optimizer's torch name.
        optimizer: &'static str,
        /// The group's index.
        group: usize,
        /// The missing key.
        key: String,
    },

    /// Anything else wrong with a state_dict, located by a path such as
    /// `state[3].exp_avg` or `param_groups[1].params`.
    #[error("invalid state_dict at {path}: {reason}")]
    InvalidStateDict {
        /// Where in the state_dict.
        path: String,
        /// What is wrong there and what was expected.
        reason: String,
    },

    /// A checkpoint file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// A state_dict could not be read or written as JSON.
    #[error("state_dict JSON: {0}")]
    Json(#[from] serde_json::Error),

    /// The framework that holds a parameter (an adapter's [`ParamSlot`](crate::ParamSlot))
    /// failed to give access to it.
    #[error("parameter {param}: {source}")]
    Storage {
        /// The parameter, in state_dict numbering (or its position in its group).
        param: usize,
        /// The framework's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// [`set_num_threads`](crate::set_num_threads) was given an unusable count.
    #[error("invalid thread count: {reason}")]
    InvalidThreadCount {
        /// What was wrong.
        reason: String,
    },

    /// The closure passed to `step_with_closure` failed.
    #[error("closure failed: {0}")]
    Closure(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Wraps any error of a closure (for `step_with_closure`).
    ///
    /// ```
    /// let e = ferroptim::Error::closure(std::io::Error::other("data loader died"));
    /// assert_eq!(e.to_string(), "closure failed: data loader died");
    /// ```
    pub fn closure(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Closure(Box::new(e))
    }

    pub(crate) fn hyper(name: &'static str, message: String) -> Self {
        Error::InvalidHyperparameter { name, message }
    }

    pub(crate) fn state(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidStateDict {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
