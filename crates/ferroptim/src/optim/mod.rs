//! The optimization algorithms, one module each, and [`build`] to make one by name
//! from the [`registry`]: one row per optimizer.
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
mod adamw_schedulefree;
mod adan;
mod ademamix;
mod adopt;
mod asgd;
mod lamb;
mod lars;
mod lbfgs;
mod lion;
mod lookahead;
mod muon;
mod nadam;
mod prodigy;
mod radam;
mod rmsprop;
mod rprop;
mod schedule_free;
mod sgd;
mod sgd_schedulefree;
mod soap;
mod sparse_adam;

pub use adadelta::{Adadelta, AdadeltaConfig, AdadeltaState};
pub use adafactor::{Adafactor, AdafactorConfig, AdafactorMoment, AdafactorState};
pub use adagrad::{Adagrad, AdagradConfig, AdagradState};
pub use adam::{Adam, AdamConfig, AdamState};
pub use adamax::{Adamax, AdamaxConfig, AdamaxState};
pub use adamw::{AdamW, AdamWConfig};
pub use adamw_schedulefree::{AdamWScheduleFree, AdamWScheduleFreeConfig, AdamWScheduleFreeState};
pub use adan::{Adan, AdanConfig, AdanState};
pub use ademamix::{AdEMAMix, AdEMAMixConfig, AdEMAMixState};
pub use adopt::{Adopt, AdoptConfig, AdoptState};
pub use asgd::{Asgd, AsgdConfig, AsgdState};
pub use lamb::{Lamb, LambConfig, LambState};
pub use lars::{Lars, LarsConfig};
pub use lbfgs::{Lbfgs, LbfgsConfig, LbfgsState, LineSearch};
pub use lion::{Lion, LionConfig, LionState};
pub use lookahead::{Lookahead, LookaheadConfig, PullbackMomentum};
pub use muon::{Muon, MuonConfig, MuonState, ADJUST_LR_FNS};
pub use nadam::{NAdam, NAdamConfig, NAdamState};
pub use prodigy::{Prodigy, ProdigyConfig, ProdigyState, SharedStep};
pub use radam::{RAdam, RAdamConfig, RAdamState};
pub use rmsprop::{Rmsprop, RmspropConfig, RmspropState};
pub use rprop::{Rprop, RpropConfig, RpropState};
pub use sgd::{Sgd, SgdConfig, SgdState};
pub use sgd_schedulefree::{SgdScheduleFree, SgdScheduleFreeConfig, SgdScheduleFreeState};
pub use soap::{DataFormat, Soap, SoapConfig, SoapState};
pub use sparse_adam::{SparseAdam, SparseAdamConfig, SparseAdamState};

pub mod registry;

crate::for_each_optimizer!(crate::__ferroptim_registry);
