//! The optimization algorithms, one module each, and [`build`] to make one by name.
//!
//! Each module holds the algorithm's `Config` (torch's arguments and
//! defaults), its per-parameter `State` (torch's state keys) and its update;
//! the type alias (`Sgd`, `Adam`, ...) is the ready-to-use optimizer.

mod adadelta;
mod adafactor;
mod adagrad;
mod adam;
mod adamax;
mod adamw;
mod asgd;
mod lbfgs;
mod muon;
mod nadam;
mod radam;
mod rmsprop;
mod rprop;
mod sgd;
mod sparse_adam;

pub use adadelta::{Adadelta, AdadeltaConfig, AdadeltaState};
pub use adafactor::{Adafactor, AdafactorConfig, AdafactorMoment, AdafactorState};
pub use adagrad::{Adagrad, AdagradConfig, AdagradState};
pub use adam::{Adam, AdamConfig, AdamState};
pub use adamax::{Adamax, AdamaxConfig, AdamaxState};
pub use adamw::{AdamW, AdamWConfig};
pub use asgd::{Asgd, AsgdConfig, AsgdState};
pub use lbfgs::{Lbfgs, LbfgsConfig, LbfgsState, LineSearch};
pub use muon::{Muon, MuonConfig, MuonState, ADJUST_LR_FNS};
pub use nadam::{NAdam, NAdamConfig, NAdamState};
pub use radam::{RAdam, RAdamConfig, RAdamState};
pub use rmsprop::{Rmsprop, RmspropConfig, RmspropState};
pub use rprop::{Rprop, RpropConfig, RpropState};
pub use sgd::{Sgd, SgdConfig, SgdState};
pub use sparse_adam::{SparseAdam, SparseAdamConfig, SparseAdamState};

use crate::error::{Error, Result};
use crate::group::IntoParamGroups;
use crate::optimizer::{Algorithm, Optim, Optimizer};

/// The names [`build`] accepts (case-insensitive), torch's class names in lower case.
pub const NAMES: &[&str] = &[
    "sgd",
    "adam",
    "adamax",
    "adadelta",
    "adagrad",
    "rmsprop",
    "asgd",
    "rprop",
    "sparseadam",
    "adamw",
    "nadam",
    "radam",
    "adafactor",
    "muon",
    "lbfgs",
];

/// Builds an optimizer by name from a JSON object of torch's arguments;
/// arguments left out take torch's defaults.
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
pub fn build(
    name: &str,
    config_json: &str,
    params: impl IntoParamGroups,
) -> Result<Box<dyn Optimizer>> {
    fn make<A: Algorithm>(json: &str, params: impl IntoParamGroups) -> Result<Box<dyn Optimizer>> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let config: A = serde_json::from_str(json)
            .and_then(crate::json::from_value)
            .map_err(|e| Error::InvalidConfig {
                optimizer: A::NAME,
                reason: e.to_string(),
            })?;
        Ok(Box::new(Optim::new(params, config)?))
    }
    match name.to_ascii_lowercase().as_str() {
        "sgd" => make::<SgdConfig>(config_json, params),
        "adam" => make::<AdamConfig>(config_json, params),
        "adamax" => make::<AdamaxConfig>(config_json, params),
        "adadelta" => make::<AdadeltaConfig>(config_json, params),
        "adagrad" => make::<AdagradConfig>(config_json, params),
        "rmsprop" => make::<RmspropConfig>(config_json, params),
        "asgd" => make::<AsgdConfig>(config_json, params),
        "rprop" => make::<RpropConfig>(config_json, params),
        "sparseadam" => make::<SparseAdamConfig>(config_json, params),
        "adamw" => make::<AdamWConfig>(config_json, params),
        "nadam" => make::<NAdamConfig>(config_json, params),
        "radam" => make::<RAdamConfig>(config_json, params),
        "adafactor" => make::<AdafactorConfig>(config_json, params),
        "muon" => make::<MuonConfig>(config_json, params),
        "lbfgs" => {
            let json = if config_json.trim().is_empty() {
                "{}"
            } else {
                config_json
            };
            let config: LbfgsConfig =
                serde_json::from_str(json).map_err(|e| Error::InvalidConfig {
                    optimizer: "LBFGS",
                    reason: e.to_string(),
                })?;
            Ok(Box::new(Lbfgs::new(params, config)?))
        }
        _ => Err(Error::UnknownOptimizer {
            name: name.to_string(),
            expected: NAMES.join(", "),
        }),
    }
}
