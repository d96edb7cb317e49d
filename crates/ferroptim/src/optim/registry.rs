//! Every optimizer, one row each: the one place that lists them.
//!
//! [`for_each_optimizer!`](crate::for_each_optimizer) holds the rows and
//! hands them to a macro; from them come [`NAMES`](super::NAMES),
//! [`REGISTRY`](super::REGISTRY), [`build`](super::build), and, in other
//! crates, `ferroptim-candle`'s type aliases and the CLI's demo, trajectory
//! and benchmark settings. Adding an optimizer is its module and one row.

use serde_json::Value;

/// How a tool drives an optimizer's step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drive {
    /// `step()` after dense gradients are set.
    Dense,
    /// `step()` after sparse gradients are set (SparseAdam refuses dense ones).
    Sparse,
    /// `step_with_closure`, which recomputes the loss and gradients (LBFGS).
    Closure,
}

/// The bytes a step must move per element, as arrays of the parameter's
/// dtype: the passes it must make over each tensor, in order. What `ferroptim
/// bench` measures a step against, by running passes that move the same
/// arrays with no arithmetic to speak of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Floor {
    /// The passes, each over the whole tensor before the next begins.
    pub passes: &'static [Pass],
}

/// One pass over a tensor: `reads` arrays (parameter, gradient, state) read
/// and `writes` of them written back. A pass with no writes is a reduction
/// (the per-tensor norms that LARS needs before it can update anything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pass {
    /// Arrays read.
    pub reads: usize,
    /// Arrays written back (of those read).
    pub writes: usize,
}

impl Floor {
    /// Bytes moved per element for elements of `element_bytes`.
    pub fn bytes_per_element(&self, element_bytes: usize) -> usize {
        self.passes
            .iter()
            .map(|p| (p.reads + p.writes) * element_bytes)
            .sum()
    }

    /// How many distinct arrays the passes touch: the most any one reads.
    pub fn arrays(&self) -> usize {
        self.passes.iter().map(|p| p.reads).max().unwrap_or(0)
    }
}

/// One optimizer's row.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// The name [`build`](super::build) takes: torch's class name in lower case.
    pub name: &'static str,
    /// torch's class name.
    pub torch_name: &'static str,
    /// The implementation its numbers are proven against.
    pub reference: &'static str,
    /// How its step is driven.
    pub drive: Drive,
    /// Whether it takes only matrices (Muon).
    pub matrices_only: bool,
    /// The bytes its step moves (`None`: not an element-wise step, or not dense).
    pub floor: Option<Floor>,
    /// The arguments `ferroptim bench` runs it with (JSON).
    pub bench: &'static str,
    /// The arguments of the CLI's demo (an MLP on real data), or `None`
    /// where the demo cannot run it.
    pub demo: Option<&'static str>,
    /// How many full-batch steps per epoch the demo takes instead of
    /// minibatches (Rprop follows the sign of the whole gradient; LBFGS).
    pub demo_full_batch: Option<usize>,
    /// The arguments of the CLI's trajectory plots (2-D test functions).
    pub trajectories: &'static str,
}

impl Entry {
    /// The demo's arguments as JSON (`None` if the demo cannot run it).
    pub fn demo_config(&self) -> Option<Value> {
        serde_json::from_str(self.demo?).ok()
    }
}

/// Calls `$callback!` with every optimizer's row, in the order of
/// [`NAMES`](crate::optim::NAMES):
///
/// ```text
/// name: config type, candle alias (if it runs through candle's per-parameter
/// adapter), drive, matrices_only, floor, bench, demo, demo_full_batch, trajectories;
/// ```
#[macro_export]
#[doc(hidden)]
macro_rules! for_each_optimizer {
    ($($callback:tt)+) => {
        $($callback)+! {
            //  name         config            candle alias  drive    matrices floor               bench                                demo                                                              full batch  trajectories
            sgd:        SgdConfig,        [Sgd],       Dense,   false, [(3, 2)], r#"{"lr": 0.01, "momentum": 0.9}"#, Some(r#"{"lr": 0.05, "momentum": 0.9}"#),                          None,    r#"{"lr": 0.001, "momentum": 0.9}"#;
            adam:       AdamConfig,       [Adam],      Dense,   false, [(4, 3)], "{}",                               Some(r#"{"lr": 0.005}"#),                                         None,    r#"{"lr": 0.05}"#;
            adamax:     AdamaxConfig,     [Adamax],    Dense,   false, [(4, 3)], "{}",                               Some(r#"{"lr": 0.01}"#),                                          None,    r#"{"lr": 0.05}"#;
            adadelta:   AdadeltaConfig,   [Adadelta],  Dense,   false, [(4, 3)], "{}",                               Some(r#"{"lr": 1.0}"#),                                           None,    r#"{"lr": 20.0}"#;
            adagrad:    AdagradConfig,    [Adagrad],   Dense,   false, [(3, 2)], "{}",                               Some(r#"{"lr": 0.05}"#),                                          None,    r#"{"lr": 0.5}"#;
            rmsprop:    RmspropConfig,    [Rmsprop],   Dense,   false, [(3, 2)], "{}",                               Some(r#"{"lr": 0.002}"#),                                         None,    r#"{"lr": 0.01}"#;
            asgd:       AsgdConfig,       [Asgd],      Dense,   false, [(3, 2)], "{}",                               Some(r#"{"lr": 0.1}"#),                                           None,    r#"{"lr": 0.002}"#;
            rprop:      RpropConfig,      [Rprop],     Dense,   false, [(4, 3)], "{}",                               Some(r#"{"lr": 0.01}"#),                                          Some(5), r#"{"lr": 0.01}"#;
            sparseadam: SparseAdamConfig, [SparseAdam], Sparse, false, [],        "{}",                               None,                                                             None,    r#"{"lr": 0.05}"#;
            adamw:      AdamWConfig,      [AdamW],     Dense,   false, [(4, 3)], "{}",                               Some(r#"{"lr": 0.005, "weight_decay": 0.01}"#),                   None,    r#"{"lr": 0.05, "weight_decay": 0.0}"#;
            nadam:      NAdamConfig,      [NAdam],     Dense,   false, [(4, 3)], "{}",                               Some(r#"{"lr": 0.005}"#),                                         None,    r#"{"lr": 0.05}"#;
            radam:      RAdamConfig,      [RAdam],     Dense,   false, [(4, 3)], "{}",                               Some(r#"{"lr": 0.01}"#),                                          None,    r#"{"lr": 0.002}"#;
            // The bench's parameters are vectors, so Adafactor keeps a full second
            // moment; its update is scaled by its own norm: two passes, one
            // reading θ, g, v and writing v (both norms), one writing θ.
            adafactor:  AdafactorConfig,  [Adafactor], Dense,   false, [(3, 1), (3, 1)], "{}",                               Some(r#"{"lr": 0.02}"#),                                          None,    r#"{"lr": 0.05}"#;
            // Newton–Schulz is matrix products, not an element-wise pass: no floor.
            muon:       MuonConfig,       [Muon],      Dense,   true,  [],        r#"{"weight_decay": 0.0}"#,         Some(r#"{"lr": 0.05}"#),                                          None,    r#"{"lr": 0.02, "weight_decay": 0.0}"#;
            // One step of up to 5 iterations per demo epoch; one iteration per
            // trajectory step, so that every iterate is drawn.
            lbfgs:      LbfgsConfig,      [],          Closure, false, [],        "{}",                               Some(r#"{"lr": 1.0, "line_search_fn": "strong_wolfe", "max_iter": 5}"#), Some(1), r#"{"lr": 1.0, "max_iter": 1, "max_eval": 25, "line_search_fn": "strong_wolfe"}"#;
            // Beyond torch.optim: lion-pytorch's Lion (a 3-10x smaller lr than AdamW's, as its authors advise).
            lion:       LionConfig,       [Lion],      Dense,   false, [(3, 2)], "{}",                               Some(r#"{"lr": 0.001}"#),                                         None,    r#"{"lr": 0.02}"#;
            // pytorch-optimizer's ADOPT and AdEMAMix. With `cautious` or `stable_adamw`
            // they take a read-only pass first (their per-tensor sums); not by default.
            adopt:      AdoptConfig,      [Adopt],     Dense,   false, [(4, 3)], "{}",                               Some(r#"{"lr": 0.005}"#),                                         None,    r#"{"lr": 0.05}"#;
            ademamix:   AdEMAMixConfig,   [AdEMAMix],  Dense,   false, [(5, 4)], "{}",                               Some(r#"{"lr": 0.002}"#),                                         None,    r#"{"lr": 0.02}"#;
            // timm's LARS, benched as used (momentum and weight decay): a read-only pass
            // over θ and g for the two norms, then SGD's, reading θ, g, b and writing θ, b.
            lars:       LarsConfig,       [Lars],      Dense,   false, [(2, 0), (3, 2)], r#"{"momentum": 0.9, "weight_decay": 0.0001}"#,          Some(r#"{"lr": 0.1, "momentum": 0.9, "always_adapt": true, "trust_coeff": 0.01}"#), None, r#"{"lr": 0.5, "momentum": 0.9, "always_adapt": true, "trust_coeff": 0.01}"#;
            // pytorch-optimizer's LAMB: a pass reading θ, g, m, v and writing m, v (the
            // two norms), then one reading θ, m, v and writing θ.
            lamb:       LambConfig,       [Lamb],      Dense,   false, [(4, 2), (3, 1)], "{}",                               Some(r#"{"lr": 0.01}"#),                                          None,    r#"{"lr": 0.05}"#;
            // pytorch-optimizer's Adan: one pass over θ, g and its four state buffers.
            adan:       AdanConfig,       [Adan],      Dense,   false, [(6, 5)], "{}",                               Some(r#"{"lr": 0.005}"#),                                         None,    r#"{"lr": 0.05}"#;
            // prodigyopt's Prodigy: a pass reading θ, g, m, v, s, θ₀ and writing m, v, s (the
            // D estimate's sums), then one reading θ, m, v and writing θ.
            prodigy:    ProdigyConfig,    [Prodigy],   Dense,   false, [(6, 3), (3, 1)], "{}",                               Some(r#"{"lr": 1.0}"#),                                           None,    r#"{"lr": 1.0}"#;
            // pytorch-optimizer's SOAP: Adam in the eigenbasis of Shampoo's statistics, refreshed
            // by QR every precondition_frequency steps; matrix products, not an element-wise pass: no floor.
            soap:       SoapConfig,       [Soap],      Dense,   false, [],        "{}",                               Some(r#"{"lr": 0.003}"#),                                         None,    r#"{"lr": 0.05}"#;
            // schedulefree's: call train() before steps, eval() before evaluating.
            sgdschedulefree:   SgdScheduleFreeConfig,   [SgdScheduleFree],   Dense, false, [(3, 2)], "{}", Some(r#"{"lr": 1.0}"#),  None, r#"{"lr": 0.002}"#;
            adamwschedulefree: AdamWScheduleFreeConfig, [AdamWScheduleFree], Dense, false, [(4, 3)], "{}", Some(r#"{"lr": 0.01}"#), None, r#"{"lr": 0.05}"#;
        }
    };
}

/// Builds [`NAMES`](super::NAMES), [`REGISTRY`](super::REGISTRY) and
/// [`build`](super::build) from the rows.
#[macro_export]
#[doc(hidden)]
macro_rules! __ferroptim_registry {
    ($($name:ident: $config:ident, [$($alias:ident)?], $drive:ident, $matrices:literal, [$(($reads:literal, $writes:literal)),*], $bench:literal, $demo:expr, $full:expr, $traj:literal;)*) => {
        /// The names [`build`] accepts (case-insensitive), torch's class names in lower case.
        pub const NAMES: &[&str] = &[$(stringify!($name)),*];

        /// Every optimizer's row (see [`registry`](self::registry)).
        pub const REGISTRY: &[$crate::optim::registry::Entry] = &[$(
            $crate::optim::registry::Entry {
                name: stringify!($name),
                torch_name: <$config as $crate::Hyperparameters>::NAME,
                reference: <$config as $crate::Hyperparameters>::REFERENCE,
                drive: $crate::optim::registry::Drive::$drive,
                matrices_only: $matrices,
                floor: $crate::__ferroptim_floor!($(($reads, $writes)),*),
                bench: $bench,
                demo: $demo,
                demo_full_batch: $full,
                trajectories: $traj,
            }
        ),*];

        /// Builds an optimizer by name from a JSON object of torch's
        /// arguments, over any kind of parameter; arguments left out take
        /// torch's defaults.
        ///
        /// ```
        /// use ferroptim::{optim, Optimizer, Param};
        /// let p = Param::zeros::<f32>(&[4]);
        /// let opt = optim::build("adam", r#"{"lr": 0.01, "amsgrad": true}"#, [p])?;
        /// assert_eq!((opt.name(), opt.lr(0)), ("Adam", Some(0.01)));
        /// assert!(optim::build("adam", r#"{"lr": 0.01, "amsgard": true}"#, [Param::zeros::<f32>(&[1])]).is_err());
        /// assert!(optim::build("adamz", "{}", [Param::zeros::<f32>(&[1])]).is_err());
        /// # Ok::<(), ferroptim::Error>(())
        /// ```
        pub fn build<P: $crate::ParamSlot>(
            name: &str,
            config_json: &str,
            params: impl $crate::IntoParamGroups<P>,
        ) -> $crate::Result<Box<dyn $crate::AddParamGroup<P>>> {
            match name.to_ascii_lowercase().as_str() {
                $(stringify!($name) => $crate::optim::registry::construct::<$config, P>(config_json, params),)*
                "lookahead" => Ok(Box::new($crate::optim::Lookahead::<P>::from_json(config_json, params)?)),
                _ => Err($crate::Error::UnknownOptimizer {
                    name: name.to_string(),
                    expected: $crate::optim::registry::entries()
                        .map(|e| e.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            }
        }
    };
}

#[macro_export]
#[doc(hidden)]
macro_rules! __ferroptim_floor {
    () => {
        None
    };
    ($(($reads:literal, $writes:literal)),+) => {
        Some($crate::optim::registry::Floor {
            passes: &[$($crate::optim::registry::Pass {
                reads: $reads,
                writes: $writes,
            }),+],
        })
    };
}

/// The optimizers that wrap another ([`Lookahead`](crate::optim::Lookahead)):
/// [`build`](crate::optim::build) makes them by name like the others, from
/// JSON that names the base optimizer in `optimizer` beside the base's own
/// arguments (`{"optimizer": "adamw", "k": 5, "lr": 0.01}`). Their step is the
/// base's, so they have no floor of their own.
pub const WRAPPERS: &[Entry] = &[Entry {
    name: "lookahead",
    torch_name: "Lookahead",
    reference: "pytorch-optimizer 4.1.0",
    drive: Drive::Dense,
    matrices_only: false,
    floor: None,
    bench: r#"{"optimizer": "adam"}"#,
    demo: Some(r#"{"optimizer": "adamw", "lr": 0.005, "weight_decay": 0.01}"#),
    demo_full_batch: None,
    trajectories: r#"{"optimizer": "adam", "lr": 0.05}"#,
}];

/// Every row: the [`REGISTRY`](crate::optim::REGISTRY)'s algorithms, then the [`WRAPPERS`].
pub fn entries() -> impl Iterator<Item = &'static Entry> {
    super::REGISTRY.iter().chain(WRAPPERS)
}

/// A config that makes an optimizer over any kind of parameter: every
/// per-parameter [`Algorithm`](crate::Algorithm) makes an
/// [`Optim`](crate::Optim), LBFGS its own.
pub trait Construct: crate::Hyperparameters {
    /// The optimizer over `params` with these defaults.
    fn construct<P: crate::ParamSlot>(
        self,
        params: impl crate::IntoParamGroups<P>,
    ) -> crate::Result<Box<dyn crate::AddParamGroup<P>>>;
}

impl<A: crate::Algorithm> Construct for A {
    fn construct<P: crate::ParamSlot>(
        self,
        params: impl crate::IntoParamGroups<P>,
    ) -> crate::Result<Box<dyn crate::AddParamGroup<P>>> {
        Ok(Box::new(crate::Optim::new(params, self)?))
    }
}

impl Construct for super::LbfgsConfig {
    fn construct<P: crate::ParamSlot>(
        self,
        params: impl crate::IntoParamGroups<P>,
    ) -> crate::Result<Box<dyn crate::AddParamGroup<P>>> {
        Ok(Box::new(super::Lbfgs::new(params, self)?))
    }
}

/// Reads `C` from JSON (empty means `{}`) of torch's keyword arguments,
/// torch's implementation flags included, then builds the optimizer.
pub(crate) fn construct<C: Construct, P: crate::ParamSlot>(
    json: &str,
    params: impl crate::IntoParamGroups<P>,
) -> crate::Result<Box<dyn crate::AddParamGroup<P>>> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    let invalid = |e: serde_json::Error| crate::Error::InvalidConfig {
        optimizer: C::NAME,
        reason: e.to_string(),
    };
    let value = match serde_json::from_str(json).map_err(invalid)? {
        serde_json::Value::Object(kwargs) => {
            serde_json::Value::Object(crate::group::strip_torch_flags::<C>(&kwargs)?)
        }
        other => other,
    };
    let config: C = crate::json::from_value(value).map_err(invalid)?;
    config.construct(params)
}

#[cfg(test)]
mod tests {
    use super::super::{NAMES, REGISTRY};

    fn build_err(name: &str, json: &str) -> String {
        match super::super::build(name, json, [crate::Param::zeros::<f32>(&[2])]) {
            Ok(_) => panic!("{name} {json} built"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn torch_flags_are_accepted_where_honoured() {
        let json = r#"{"lr": 0.01, "foreach": true, "fused": false, "capturable": false, "differentiable": false}"#;
        let opt = super::super::build("adam", json, [crate::Param::zeros::<f32>(&[2])]).unwrap();
        assert_eq!(opt.lr(0), Some(0.01));
        super::super::build(
            "sgd",
            r#"{"foreach": null, "fused": null}"#,
            [crate::Param::zeros::<f32>(&[2])],
        )
        .unwrap();
        // The four optimizers torch has fused kernels for run them.
        for name in ["adam", "adamw", "sgd", "adagrad"] {
            let opt = super::super::build(
                name,
                r#"{"fused": true}"#,
                [crate::Param::zeros::<f32>(&[2])],
            );
            assert_eq!(
                opt.unwrap().hyperparameter(0, "fused"),
                Some(serde_json::json!(true)),
                "{name}"
            );
        }
        assert_eq!(
            build_err("adamw", r#"{"fused": true, "foreach": true}"#),
            "invalid AdamW configuration: `fused` and `foreach` cannot be `True` together."
        );
        assert!(build_err("adam", r#"{"capturable": true}"#).contains("CUDA graphs"));
        assert!(build_err("adamw", r#"{"differentiable": true}"#).contains("not differentiable"));
        assert!(build_err("adam", r#"{"foreach": 1}"#).contains("expected true, false or null"));
        let nadam = build_err("nadam", r#"{"fused": false}"#);
        assert!(
            nadam.contains("torch.optim.NAdam has no such argument"),
            "{nadam}"
        );
        assert!(build_err("lbfgs", r#"{"foreach": false}"#).contains("flags: none"));
    }

    #[test]
    fn a_tuple_of_the_wrong_length_says_how_long() {
        let e = build_err("adam", r#"{"betas": [0.9, 0.99, 0.5]}"#);
        assert!(e.contains("`betas` must have 2 elements, found 3"), "{e}");
        let e = build_err("rprop", r#"{"etas": [0.5]}"#);
        assert!(e.contains("`etas` must have 2 elements, found 1"), "{e}");
    }

    #[test]
    fn group_overrides_take_torch_flags_too() {
        use crate::{GroupSpec, Optimizer};
        let groups =
            vec![GroupSpec::new(vec![crate::Param::zeros::<f32>(&[2])]).set("foreach", false)];
        let opt = crate::optim::Adam::new(groups, Default::default()).unwrap();
        assert_eq!(opt.num_param_groups(), 1);
    }

    #[test]
    fn every_row_builds_and_names_itself() {
        assert_eq!(NAMES.len(), REGISTRY.len());
        let names = NAMES.iter().chain(super::WRAPPERS.iter().map(|e| &e.name));
        for (entry, name) in super::entries().zip(names) {
            assert_eq!(entry.name, *name);
            let p = crate::Param::zeros::<f32>(&[2, 2]);
            let opt = super::super::build(name, entry.bench, [p]).unwrap();
            assert_eq!(opt.name(), entry.torch_name);
            assert_eq!(entry.torch_name.to_ascii_lowercase(), entry.name);
            for config in [Some(entry.trajectories), entry.demo].into_iter().flatten() {
                let p = crate::Param::zeros::<f32>(&[2, 2]);
                super::super::build(name, config, [p]).unwrap();
            }
            if entry.demo.is_some() {
                assert!(entry.demo_config().is_some(), "{name}");
            }
        }
    }
}
