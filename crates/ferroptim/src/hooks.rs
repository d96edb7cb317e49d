//! torch's optimizer hooks: functions run before and after `step`,
//! `state_dict` and `load_state_dict`.
//!
//! As in torch, hooks run in the order they were registered, a hook
//! registered with `prepend` runs before all others, and registering returns
//! a [`HookHandle`] whose [`remove`](HookHandle::remove) takes the hook out.
//! A step pre-hook may refuse the step by returning an error: the step does
//! not run and nothing changes. A load pre-hook may rewrite the state_dict
//! being loaded (torch's returned dict) or refuse it.
//!
//! Hooks are `Fn + Send + Sync` and receive the optimizer read-only; keep
//! counters or logs in the closure (an atomic, a `Mutex`). The list is read
//! before the hooks run, so a hook may register or remove hooks (the change
//! applies from the next call) and may call the optimizer's `&self` methods.
//!
//! A pre-hook that refuses steps while the learning rate is too large:
//!
//! ```
//! use ferroptim::{optim::{Sgd, SgdConfig}, Error, Optimizer, Param, Tensor};
//! let p = Param::from_vec(vec![1.0f32], &[1])?;
//! let mut opt = Sgd::new([p.clone()], SgdConfig { lr: 0.5, ..Default::default() })?;
//! let veto = opt.register_step_pre_hook(
//!     |opt| match opt.lr(0) {
//!         Some(lr) if lr > 0.1 => Err(Error::Vetoed(format!("lr {lr} is too large"))),
//!         _ => Ok(()),
//!     },
//!     false,
//! );
//! p.set_grad(Tensor::from_vec(vec![1.0f32], &[1])?)?;
//! assert!(matches!(opt.step(), Err(Error::Vetoed(_))));
//! assert_eq!(p.to_vec::<f32>()?, [1.0]);
//! veto.remove();
//! opt.step()?;
//! assert_eq!(p.to_vec::<f32>()?, [0.5]);
//! # Ok::<(), ferroptim::Error>(())
//! ```
//!
//! `Hooks<O>` is generic over what a hook receives only so that this module
//! does not depend on the [`Optimizer`](crate::Optimizer) trait; optimizers
//! hold an [`OptimizerHooks`](crate::OptimizerHooks).

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::error::Result;
use crate::state::StateDict;

/// Runs before `step`: an error stops the step.
pub type StepPreHook<O> = dyn Fn(&O) -> Result<()> + Send + Sync;
/// Runs after a step that succeeded.
pub type StepPostHook<O> = dyn Fn(&O) + Send + Sync;
/// Runs before `state_dict` builds the dict.
pub type StateDictPreHook<O> = dyn Fn(&O) + Send + Sync;
/// Runs on the dict `state_dict` built, and may change it.
pub type StateDictPostHook<O> = dyn Fn(&O, &mut StateDict) + Send + Sync;
/// Runs on (a copy of) the dict given to `load_state_dict` before it is
/// checked: it may change it, or refuse it with an error.
pub type LoadStateDictPreHook<O> = dyn Fn(&O, &mut StateDict) -> Result<()> + Send + Sync;
/// Runs after `load_state_dict` succeeded.
pub type LoadStateDictPostHook<O> = dyn Fn(&O) + Send + Sync;

/// Hooks of one kind, in calling order.
struct List<F: ?Sized> {
    hooks: Vec<(u64, Arc<F>)>,
}

impl<F: ?Sized> List<F> {
    fn insert(&mut self, id: u64, hook: Arc<F>, prepend: bool) {
        if prepend {
            self.hooks.insert(0, (id, hook));
        } else {
            self.hooks.push((id, hook));
        }
    }

    fn remove(&mut self, id: u64) {
        self.hooks.retain(|(i, _)| *i != id);
    }
}

impl<F: ?Sized> Clone for List<F> {
    fn clone(&self) -> Self {
        List {
            hooks: self.hooks.clone(),
        }
    }
}

impl<F: ?Sized> Default for List<F> {
    fn default() -> Self {
        List { hooks: Vec::new() }
    }
}

struct Table<O: ?Sized> {
    next_id: u64,
    step_pre: List<StepPreHook<O>>,
    step_post: List<StepPostHook<O>>,
    state_dict_pre: List<StateDictPreHook<O>>,
    state_dict_post: List<StateDictPostHook<O>>,
    load_pre: List<LoadStateDictPreHook<O>>,
    load_post: List<LoadStateDictPostHook<O>>,
}

impl<O: ?Sized> Table<O> {
    fn remove(&mut self, id: u64) {
        self.step_pre.remove(id);
        self.step_post.remove(id);
        self.state_dict_pre.remove(id);
        self.state_dict_post.remove(id);
        self.load_pre.remove(id);
        self.load_post.remove(id);
    }
}

impl<O: ?Sized> Clone for Table<O> {
    fn clone(&self) -> Self {
        Table {
            next_id: self.next_id,
            step_pre: self.step_pre.clone(),
            step_post: self.step_post.clone(),
            state_dict_pre: self.state_dict_pre.clone(),
            state_dict_post: self.state_dict_post.clone(),
            load_pre: self.load_pre.clone(),
            load_post: self.load_post.clone(),
        }
    }
}

impl<O: ?Sized> Default for Table<O> {
    fn default() -> Self {
        Table {
            next_id: 0,
            step_pre: List::default(),
            step_post: List::default(),
            state_dict_pre: List::default(),
            state_dict_post: List::default(),
            load_pre: List::default(),
            load_post: List::default(),
        }
    }
}

/// Calls `$callback!` with every kind of hook, the hooks receiving `&$o`:
/// torch's method name, the list it goes in, its type, the closure's bound,
/// and what it does. [`Hooks`] and the [`Optimizer`](crate::Optimizer)
/// trait write their `register_*` methods from it.
macro_rules! for_each_hook {
    ($callback:ident, $o:ty) => {
        $crate::hooks::$callback! {
            register_step_pre_hook, step_pre, StepPreHook, [Fn(&$o) -> Result<()>],
            "torch's `register_step_pre_hook(hook, prepend)`: `hook` runs before every \
             step; an error from it stops the step, which changes nothing and returns the error.";
            register_step_post_hook, step_post, StepPostHook, [Fn(&$o)],
            "torch's `register_step_post_hook(hook, prepend)`: runs after every step that succeeded.";
            register_state_dict_pre_hook, state_dict_pre, StateDictPreHook, [Fn(&$o)],
            "torch's `register_state_dict_pre_hook(hook, prepend)`: runs before `state_dict`.";
            register_state_dict_post_hook, state_dict_post, StateDictPostHook, [Fn(&$o, &mut StateDict)],
            "torch's `register_state_dict_post_hook(hook, prepend)`: runs on the dict \
             `state_dict` returns, which it may change.";
            register_load_state_dict_pre_hook, load_pre, LoadStateDictPreHook,
            [Fn(&$o, &mut StateDict) -> Result<()>],
            "torch's `register_load_state_dict_pre_hook(hook, prepend)`: runs on a copy of the \
             dict given to `load_state_dict`, before it is checked; it may change the copy, or \
             refuse the load with an error.";
            register_load_state_dict_post_hook, load_post, LoadStateDictPostHook, [Fn(&$o)],
            "torch's `register_load_state_dict_post_hook(hook, prepend)`: runs after \
             `load_state_dict` succeeded.";
        }
    };
}
pub(crate) use for_each_hook;

/// The `register_*` methods of [`Hooks`].
macro_rules! hooks_register {
    ($($register:ident, $list:ident, $ty:ident, [$($bound:tt)+], $doc:literal;)+) => {
        $(
            #[doc = $doc]
            pub fn $register(
                &self,
                hook: impl $($bound)+ + Send + Sync + 'static,
                prepend: bool,
            ) -> HookHandle {
                let hook: Arc<$ty<O>> = Arc::new(hook);
                self.insert(|t| &mut t.$list, hook, prepend)
            }
        )+
    };
}
pub(crate) use hooks_register;

/// The `register_*` methods of the [`Optimizer`](crate::Optimizer) trait,
/// which register on its [`hooks`](crate::Optimizer::hooks).
macro_rules! optimizer_register {
    ($($register:ident, $list:ident, $ty:ident, [$($bound:tt)+], $doc:literal;)+) => {
        $(
            #[doc = $doc]
            fn $register(
                &self,
                hook: impl $($bound)+ + Send + Sync + 'static,
                prepend: bool,
            ) -> $crate::hooks::HookHandle
            where
                Self: Sized,
            {
                self.hooks().$register(hook, prepend)
            }
        )+
    };
}
pub(crate) use optimizer_register;

/// The hooks registered on one optimizer. A clone of an optimizer starts
/// with the same hooks, registered anew: removing one from either leaves
/// the other's.
pub struct Hooks<O: ?Sized + 'static> {
    table: Arc<Mutex<Table<O>>>,
}

impl<O: ?Sized + 'static> Default for Hooks<O> {
    fn default() -> Self {
        Hooks {
            table: Arc::default(),
        }
    }
}

impl<O: ?Sized + 'static> Clone for Hooks<O> {
    fn clone(&self) -> Self {
        Hooks {
            table: Arc::new(Mutex::new(self.lock().clone())),
        }
    }
}

impl<O: ?Sized + 'static> fmt::Debug for Hooks<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.lock();
        f.debug_struct("Hooks")
            .field("step_pre", &t.step_pre.hooks.len())
            .field("step_post", &t.step_post.hooks.len())
            .field("state_dict_pre", &t.state_dict_pre.hooks.len())
            .field("state_dict_post", &t.state_dict_post.hooks.len())
            .field("load_state_dict_pre", &t.load_pre.hooks.len())
            .field("load_state_dict_post", &t.load_post.hooks.len())
            .finish()
    }
}

/// Takes a registered hook out again (torch's `RemovableHandle`). Dropping
/// the handle keeps the hook.
#[must_use = "dropping the handle keeps the hook; call remove() to take it out"]
pub struct HookHandle {
    remove: Box<dyn FnOnce() + Send + Sync>,
}

impl HookHandle {
    /// Removes the hook; the optimizer's next call runs without it.
    pub fn remove(self) {
        (self.remove)();
    }
}

impl fmt::Debug for HookHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HookHandle")
    }
}

impl<O: ?Sized + 'static> Hooks<O> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table<O>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert<F: ?Sized>(
        &self,
        list: impl FnOnce(&mut Table<O>) -> &mut List<F>,
        hook: Arc<F>,
        prepend: bool,
    ) -> HookHandle {
        let mut table = self.lock();
        let id = table.next_id;
        table.next_id += 1;
        list(&mut table).insert(id, hook, prepend);
        let weak: Weak<Mutex<Table<O>>> = Arc::downgrade(&self.table);
        HookHandle {
            remove: Box::new(move || {
                if let Some(table) = weak.upgrade() {
                    table
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(id);
                }
            }),
        }
    }

    for_each_hook!(hooks_register, O);

    /// Whether any hook is registered on `load_state_dict` (so the dict must be copied).
    pub(crate) fn has_load_pre(&self) -> bool {
        !self.lock().load_pre.hooks.is_empty()
    }

    fn snapshot<F: ?Sized>(&self, list: impl FnOnce(&Table<O>) -> &List<F>) -> Vec<Arc<F>> {
        let table = self.lock();
        list(&table).hooks.iter().map(|(_, h)| h.clone()).collect()
    }

    pub(crate) fn step_pre(&self, opt: &O) -> Result<()> {
        for hook in self.snapshot(|t| &t.step_pre) {
            hook(opt)?;
        }
        Ok(())
    }

    pub(crate) fn step_post(&self, opt: &O) {
        self.snapshot(|t| &t.step_post).iter().for_each(|h| h(opt));
    }

    pub(crate) fn state_dict_pre(&self, opt: &O) {
        self.snapshot(|t| &t.state_dict_pre)
            .iter()
            .for_each(|h| h(opt));
    }

    pub(crate) fn state_dict_post(&self, opt: &O, sd: &mut StateDict) {
        for hook in self.snapshot(|t| &t.state_dict_post) {
            hook(opt, sd);
        }
    }

    pub(crate) fn load_pre(&self, opt: &O, sd: &mut StateDict) -> Result<()> {
        for hook in self.snapshot(|t| &t.load_pre) {
            hook(opt, sd)?;
        }
        Ok(())
    }

    pub(crate) fn load_post(&self, opt: &O) {
        self.snapshot(|t| &t.load_post).iter().for_each(|h| h(opt));
    }
}
