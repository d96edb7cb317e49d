//! Schedulers made of schedulers: [`ChainedScheduler`] steps them all
//! (their factors multiply), [`SequentialLR`] hands over from one to the
//! next at milestones.

use serde_json::Value;

use super::{bisect_right, lrs, scheduler_error, set_lrs, LrScheduler, SchedulerState};
use crate::error::{Error, Result};
use crate::optimizer::Optimizer;

/// Loads each child's saved state, all or none: on error every child is
/// restored to what it was.
fn load_children(
    name: &'static str,
    children: &mut [Box<dyn LrScheduler>],
    state: &SchedulerState,
) -> Result<()> {
    let saved = state
        .get("_schedulers")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            Error::state(
                format!("{name} state_dict._schedulers"),
                "missing or not a list",
            )
        })?;
    if saved.len() != children.len() {
        return Err(Error::state(
            format!("{name} state_dict._schedulers"),
            format!(
                "{} schedulers saved, this one has {}",
                saved.len(),
                children.len()
            ),
        ));
    }
    let before: Vec<SchedulerState> = children.iter().map(|c| c.state_dict()).collect();
    for (i, (child, s)) in children.iter_mut().zip(saved).enumerate() {
        let result = match s.as_object() {
            Some(s) => child.load_state_dict(s),
            None => Err(Error::state(
                format!("{name} state_dict._schedulers[{i}]"),
                "expected an object",
            )),
        };
        if let Err(e) = result {
            for (c, b) in children.iter_mut().zip(&before) {
                // Each of these states was written by the child itself.
                let _ = c.load_state_dict(b);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Each child's state_dict, as torch's `_schedulers` list.
fn children_state(children: &[Box<dyn LrScheduler>]) -> Value {
    Value::Array(
        children
            .iter()
            .map(|s| Value::Object(s.state_dict()))
            .collect(),
    )
}

fn read_lrs(name: &'static str, state: &SchedulerState) -> Result<Vec<f64>> {
    state
        .get("_last_lr")
        .and_then(Value::as_array)
        .and_then(|v| {
            v.iter()
                .map(crate::json::as_f64)
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| {
            Error::state(
                format!("{name} state_dict._last_lr"),
                "expected a list of numbers",
            )
        })
}

fn lrs_value(lrs: &[f64]) -> Value {
    Value::Array(lrs.iter().map(|&x| crate::json::number(x)).collect())
}

/// Steps every scheduler, in order, at each step (torch's `ChainedScheduler`).
pub struct ChainedScheduler {
    schedulers: Vec<Box<dyn LrScheduler>>,
    last_lr: Vec<f64>,
    last_epoch: i64,
}

impl ChainedScheduler {
    /// Chains `schedulers`, all built on `opt`. No step is taken: each
    /// scheduler took its own construction step.
    pub fn new(opt: &dyn Optimizer, schedulers: Vec<Box<dyn LrScheduler>>) -> Result<Self> {
        if schedulers.is_empty() {
            return Err(scheduler_error(
                "ChainedScheduler",
                "ChainedScheduler expects at least one scheduler to be chained, but got no scheduler.",
            ));
        }
        Ok(ChainedScheduler {
            schedulers,
            last_lr: lrs(opt),
            last_epoch: 0,
        })
    }
}

impl LrScheduler for ChainedScheduler {
    fn name(&self) -> &'static str {
        "ChainedScheduler"
    }

    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        let before: Vec<SchedulerState> = self.schedulers.iter().map(|s| s.state_dict()).collect();
        let saved_lrs = lrs(opt);
        for s in &mut self.schedulers {
            if let Err(e) = s.step(opt) {
                for (s, b) in self.schedulers.iter_mut().zip(&before) {
                    let _ = s.load_state_dict(b);
                }
                set_lrs(opt, &saved_lrs)?;
                return Err(e);
            }
        }
        self.last_lr = lrs(opt);
        self.last_epoch = self.last_epoch.saturating_add(1);
        Ok(())
    }

    fn get_last_lr(&self) -> &[f64] {
        &self.last_lr
    }

    fn last_epoch(&self) -> i64 {
        self.schedulers
            .last()
            .map_or(self.last_epoch, |s| s.last_epoch())
    }

    fn state_dict(&self) -> SchedulerState {
        let children = children_state(&self.schedulers);
        SchedulerState::from_iter([
            ("_schedulers".to_string(), children),
            ("_last_lr".to_string(), lrs_value(&self.last_lr)),
        ])
    }

    fn load_state_dict(&mut self, state: &SchedulerState) -> Result<()> {
        let last_lr = read_lrs("ChainedScheduler", state)?;
        load_children("ChainedScheduler", &mut self.schedulers, state)?;
        self.last_lr = last_lr;
        Ok(())
    }

    /// torch's `ChainedScheduler` has no `get_lr`, so `_update_lr` raises; so does this.
    fn jump_to(&mut self, _: &mut dyn Optimizer, _: i64) -> Result<()> {
        Err(scheduler_error(
            "ChainedScheduler",
            "a chain has no closed form to jump to an epoch (torch raises NotImplementedError)",
        ))
    }

    fn rewind(&mut self) {
        for s in &mut self.schedulers {
            s.rewind();
        }
    }

    fn restart(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        self.step(opt)
    }
}

/// Runs `schedulers[i]` between `milestones[i − 1]` and `milestones[i]`
/// (torch's `SequentialLR`): at a milestone the next scheduler starts over
/// from epoch 0, in its closed form where it has one.
pub struct SequentialLR {
    schedulers: Vec<Box<dyn LrScheduler>>,
    milestones: Vec<i64>,
    last_epoch: i64,
    last_lr: Vec<f64>,
}

impl SequentialLR {
    /// `schedulers` (built on `opt`, each of which took its construction
    /// step) and `milestones`, one fewer. As in torch, every group's `lr` is
    /// reset to its `initial_lr`, the schedulers are moved back one epoch,
    /// and the first takes its construction step again.
    pub fn new(
        opt: &mut dyn Optimizer,
        schedulers: Vec<Box<dyn LrScheduler>>,
        milestones: Vec<i64>,
    ) -> Result<Self> {
        Self::resume(opt, schedulers, milestones, -1)
    }

    /// [`new`](Self::new) with torch's `last_epoch` argument (−1 is a new schedule).
    pub fn resume(
        opt: &mut dyn Optimizer,
        schedulers: Vec<Box<dyn LrScheduler>>,
        milestones: Vec<i64>,
        last_epoch: i64,
    ) -> Result<Self> {
        const NAME: &str = "SequentialLR";
        if schedulers.is_empty() {
            return Err(scheduler_error(
                NAME,
                "SequentialLR expects at least one scheduler, but got no scheduler.",
            ));
        }
        if milestones.len() + 1 != schedulers.len() {
            return Err(scheduler_error(
                NAME,
                format!(
                    "Sequential Schedulers expects number of schedulers provided to be one more than the \
                     number of milestone points, but got number of schedulers {} and the number of \
                     milestones to be equal to {}",
                    schedulers.len(),
                    milestones.len()
                ),
            ));
        }
        let initial = (0..opt.num_param_groups())
            .map(|g| super::group_value(NAME, opt, g, "initial_lr"))
            .collect::<Result<Vec<_>>>()?;
        let mut seq = SequentialLR {
            schedulers,
            milestones,
            last_epoch: super::next_epoch(NAME, last_epoch)?,
            last_lr: Vec::new(),
        };
        super::all_or_nothing(opt, |opt| {
            set_lrs(opt, &initial)?;
            seq.rewind();
            let idx = bisect_right(&seq.milestones, 0);
            seq.schedulers[idx].restart(opt)?;
            seq.last_lr = seq.schedulers[idx].get_last_lr().to_vec();
            Ok(seq)
        })
    }
}

impl LrScheduler for SequentialLR {
    fn name(&self) -> &'static str {
        "SequentialLR"
    }

    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        let epoch = super::next_epoch("SequentialLR", self.last_epoch)?;
        let idx = bisect_right(&self.milestones, epoch);
        let scheduler = &mut self.schedulers[idx];
        if idx > 0 && self.milestones[idx - 1] == epoch {
            scheduler.jump_to(opt, 0)?;
        } else {
            scheduler.step(opt)?;
        }
        self.last_lr = scheduler.get_last_lr().to_vec();
        self.last_epoch = epoch;
        Ok(())
    }

    fn get_last_lr(&self) -> &[f64] {
        &self.last_lr
    }

    fn last_epoch(&self) -> i64 {
        self.last_epoch
    }

    fn state_dict(&self) -> SchedulerState {
        let children = children_state(&self.schedulers);
        SchedulerState::from_iter([
            ("_schedulers".to_string(), children),
            (
                "_milestones".to_string(),
                Value::from(self.milestones.clone()),
            ),
            ("last_epoch".to_string(), Value::from(self.last_epoch)),
            ("_last_lr".to_string(), lrs_value(&self.last_lr)),
        ])
    }

    fn load_state_dict(&mut self, state: &SchedulerState) -> Result<()> {
        const NAME: &str = "SequentialLR";
        let last_lr = read_lrs(NAME, state)?;
        let last_epoch = state
            .get("last_epoch")
            .and_then(Value::as_i64)
            .ok_or_else(|| {
                Error::state("SequentialLR state_dict.last_epoch", "expected an integer")
            })?;
        let milestones = state
            .get("_milestones")
            .and_then(Value::as_array)
            .and_then(|v| v.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
            .filter(|m| m.len() + 1 == self.schedulers.len())
            .ok_or_else(|| {
                Error::state(
                    "SequentialLR state_dict._milestones",
                    format!("expected {} integers", self.schedulers.len() - 1),
                )
            })?;
        load_children(NAME, &mut self.schedulers, state)?;
        self.last_lr = last_lr;
        self.last_epoch = last_epoch;
        self.milestones = milestones;
        Ok(())
    }

    /// torch's `SequentialLR` inherits `_update_lr`, whose `get_lr` it lacks; so this fails too.
    fn jump_to(&mut self, _: &mut dyn Optimizer, _: i64) -> Result<()> {
        Err(scheduler_error(
            "SequentialLR",
            "a sequence has no closed form to jump to an epoch (torch raises NotImplementedError)",
        ))
    }

    fn rewind(&mut self) {
        for s in &mut self.schedulers {
            s.rewind();
        }
    }

    fn restart(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        self.step(opt)
    }
}
