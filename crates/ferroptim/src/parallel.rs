//! Threads: how many a step may use (torch's `set_num_threads`), and the
//! splitting of one element-wise update across them.
//!
//! With one thread (the default) nothing here runs and a step allocates
//! nothing. With more, a step runs on a rayon pool of that many threads: the
//! parameters of a step are spread over them, and a large parameter's
//! element-wise kernel is cut into contiguous chunks of at least
//! [`MIN_CHUNK`] elements. Each element is computed by the same code either
//! way, so the numbers do not depend on the thread count.
//!
//! **Concurrent use.** The pool serves one step at a time: a step that finds
//! it busy (another thread is stepping) runs on its own thread instead of
//! waiting, and so does a step called from inside some other rayon pool.
//! This is what makes concurrent steps deadlock-free: a worker updating a
//! parameter holds that parameter's lock while it waits for the chunks of
//! its kernel, and a waiting rayon worker runs other queued work; if that
//! work could belong to another step (or another pool) it might need the
//! same lock. Here a waiting worker only ever finds work of its own step,
//! which touches other parameters, and chunk work takes no lock at all. A
//! step keeps the pool it started with, so [`set_num_threads`] may be called
//! from any thread at any time.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex, PoisonError, RwLock, TryLockError};

use crate::error::{Error, Result};

/// The smallest piece of one kernel worth handing to another thread: below
/// this the hand-off costs more than the memory traffic it shares.
pub const MIN_CHUNK: usize = 1 << 15;

/// The most threads [`set_num_threads`] accepts.
pub const MAX_THREADS: usize = 1024;

static POOL: RwLock<Option<Arc<rayon::ThreadPool>>> = RwLock::new(None);

/// Held by the one thread whose work is on the pool.
static BUSY: Mutex<()> = Mutex::new(());

thread_local! {
    /// The pool this thread holds [`BUSY`] for, while it does.
    static HELD: RefCell<Option<Arc<rayon::ThreadPool>>> = const { RefCell::new(None) };
    /// Whether this thread is a worker of one of ferroptim's pools.
    static WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Sets the number of threads an optimizer step may use (1: the calling
/// thread only, the default), at most [`MAX_THREADS`]. Steps already
/// running finish on the threads they started with.
///
/// ```
/// ferroptim::set_num_threads(2)?;
/// assert_eq!(ferroptim::num_threads(), 2);
/// ferroptim::set_num_threads(1)?;
/// assert!(ferroptim::set_num_threads(0).is_err());
/// assert!(ferroptim::set_num_threads(usize::MAX).is_err());
/// # Ok::<(), ferroptim::Error>(())
/// ```
pub fn set_num_threads(threads: usize) -> Result<()> {
    let pool = match threads {
        0 => {
            return Err(Error::InvalidThreadCount {
                reason: "0 threads; expected at least 1".into(),
            })
        }
        1 => None,
        n if n > MAX_THREADS => {
            return Err(Error::InvalidThreadCount {
                reason: format!("{n} threads; expected at most {MAX_THREADS}"),
            })
        }
        n => Some(Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .thread_name(|i| format!("ferroptim-{i}"))
                .start_handler(|_| WORKER.set(true))
                .build()
                .map_err(|e| Error::InvalidThreadCount {
                    reason: format!("{n} threads could not be started: {e}"),
                })?,
        )),
    };
    *POOL.write().unwrap_or_else(PoisonError::into_inner) = pool;
    Ok(())
}

/// The number of threads an optimizer step may use.
pub fn num_threads() -> usize {
    current_pool().map_or(1, |p| p.current_num_threads())
}

fn current_pool() -> Option<Arc<rayon::ThreadPool>> {
    POOL.read().unwrap_or_else(PoisonError::into_inner).clone()
}

/// How work that may be shared runs (see [`with_pool`]).
pub(crate) enum Exec<'a> {
    /// On this thread alone.
    Serial,
    /// This thread is a worker of the pool: `rayon::join` shares the work.
    InPool,
    /// Hand the work to this pool with `install`.
    Install(&'a rayon::ThreadPool),
}

/// Runs `f` with the pool, if this thread may have it now without waiting:
/// it already works for the step that has it, or the pool is free (and
/// this thread is no worker of another rayon pool). Otherwise `f` runs its
/// work on this thread alone.
pub(crate) fn with_pool<R>(f: impl FnOnce(Exec<'_>) -> R) -> R {
    if WORKER.get() {
        return f(Exec::InPool);
    }
    if let Some(pool) = HELD.with_borrow(Clone::clone) {
        return f(Exec::Install(&pool));
    }
    // A worker of someone else's pool would run that pool's work while it
    // waits for ours, holding our parameters' locks.
    if rayon::current_thread_index().is_some() {
        return f(Exec::Serial);
    }
    let Some(pool) = current_pool() else {
        return f(Exec::Serial);
    };
    let _busy = match BUSY.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => return f(Exec::Serial),
    };
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            HELD.set(None);
        }
    }
    HELD.set(Some(Arc::clone(&pool)));
    let _release = Release;
    f(Exec::Install(&pool))
}

/// How many threads `exec` shares work over.
fn threads(exec: &Exec<'_>) -> usize {
    match exec {
        Exec::Serial => 1,
        Exec::InPool => rayon::current_num_threads(),
        Exec::Install(pool) => pool.current_num_threads(),
    }
}

/// Several slices (and optional slices) of the same length, cut at the same
/// place together.
pub(crate) trait Chunks: Sized + Send {
    /// The common length.
    fn len(&self) -> usize;
    /// The first `mid` elements of each, and the rest.
    fn split_at(self, mid: usize) -> (Self, Self);
}

impl<T: Sync> Chunks for &[T] {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        <[T]>::split_at(self, mid)
    }
}

impl<T: Send> Chunks for &mut [T] {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        <[T]>::split_at_mut(self, mid)
    }
}

impl<C: Chunks> Chunks for Option<C> {
    fn len(&self) -> usize {
        self.as_ref().map_or(usize::MAX, C::len)
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        match self {
            Some(c) => {
                let (a, b) = c.split_at(mid);
                (Some(a), Some(b))
            }
            None => (None, None),
        }
    }
}

macro_rules! tuple_chunks {
    ($($name:ident),+) => {
        impl<$($name: Chunks),+> Chunks for ($($name,)+) {
            fn len(&self) -> usize {
                #[allow(non_snake_case)]
                let ($($name,)+) = self;
                let mut len = usize::MAX;
                $(len = len.min($name.len());)+
                len
            }
            fn split_at(self, mid: usize) -> (Self, Self) {
                #[allow(non_snake_case)]
                let ($($name,)+) = self;
                $(#[allow(non_snake_case)] let $name = $name.split_at(mid);)+
                (($($name.0,)+), ($($name.1,)+))
            }
        }
    };
}

tuple_chunks!(A, B);
tuple_chunks!(A, B, C);
tuple_chunks!(A, B, C, D);
tuple_chunks!(A, B, C, D, E);
tuple_chunks!(A, B, C, D, E, F);

/// Runs the element-wise `kernel` over `data` (slices of equal length):
/// whole on this thread, or cut into chunks across the pool when
/// [`with_pool`] gives it one and `data` is long enough to share.
pub(crate) fn for_chunks<D: Chunks>(data: D, kernel: impl Fn(D) + Sync) {
    let n = data.len();
    // Small data never looks at the pool: its lock is shared by every thread.
    if n < 2 * MIN_CHUNK {
        return kernel(data);
    }
    with_pool(|exec| {
        let chunk = n.div_ceil(threads(&exec)).max(MIN_CHUNK);
        match exec {
            Exec::Serial => kernel(data),
            Exec::InPool => split(data, chunk, &kernel),
            Exec::Install(pool) => pool.install(|| split(data, chunk, &kernel)),
        }
    })
}

fn split<D: Chunks>(data: D, chunk: usize, kernel: &(impl Fn(D) + Sync)) {
    let n = data.len();
    if n <= chunk {
        kernel(data);
    } else {
        // Cut at a multiple of the chunk, so that pieces stay whole chunks.
        let mid = (n / 2).div_ceil(chunk) * chunk;
        let (a, b) = data.split_at(mid.min(n));
        rayon::join(|| split(a, chunk, kernel), || split(b, chunk, kernel));
    }
}

/// Sums `leaf` over `data` (slices of equal length) cut into blocks of
/// [`MIN_CHUNK`] elements, added up pairwise along a tree that depends only
/// on the length. The blocks run across the pool when [`with_pool`] gives
/// one; the tree is the same either way, so the sum does not depend on the
/// thread count.
pub(crate) fn tree_sum<D, R>(data: D, leaf: impl Fn(D) -> R + Sync) -> R
where
    D: Chunks,
    R: std::ops::Add<Output = R> + Send,
{
    if data.len() < 2 * MIN_CHUNK {
        return tree(data, &leaf, false);
    }
    with_pool(|exec| match exec {
        Exec::Serial => tree(data, &leaf, false),
        Exec::InPool => tree(data, &leaf, true),
        Exec::Install(pool) => pool.install(|| tree(data, &leaf, true)),
    })
}

fn tree<D, R>(data: D, leaf: &(impl Fn(D) -> R + Sync), parallel: bool) -> R
where
    D: Chunks,
    R: std::ops::Add<Output = R> + Send,
{
    let n = data.len();
    if n <= MIN_CHUNK {
        return leaf(data);
    }
    // Half of the blocks, rounded down, on the left.
    let mid = n.div_ceil(MIN_CHUNK) / 2 * MIN_CHUNK;
    let (a, b) = data.split_at(mid);
    let (x, y) = if parallel {
        rayon::join(|| tree(a, leaf, true), || tree(b, leaf, true))
    } else {
        (tree(a, leaf, false), tree(b, leaf, false))
    };
    x + y
}

/// Multiply-adds below which a matrix product stays on one thread.
const MIN_PRODUCT_WORK: usize = 1 << 18;

/// Runs `kernel(first_row, rows)` over `out` cut into whole rows of
/// `row_len` elements: all at once on this thread, or in blocks of rows
/// across the pool when [`with_pool`] gives one and the `work` (in
/// multiply-adds) is worth sharing.
pub(crate) fn for_rows<T: Send>(
    out: &mut [T],
    row_len: usize,
    work: usize,
    kernel: impl Fn(usize, &mut [T]) + Sync,
) {
    let rows = out.len() / row_len.max(1);
    if work < MIN_PRODUCT_WORK || rows <= 1 {
        return kernel(0, out);
    }
    with_pool(|exec| {
        let block = rows.div_ceil(4 * threads(&exec));
        let run = |out: &mut [T]| {
            use rayon::prelude::*;
            out.par_chunks_mut(block * row_len)
                .enumerate()
                .for_each(|(b, rows)| kernel(b * block, rows))
        };
        match exec {
            Exec::Serial => kernel(0, out),
            Exec::InPool => run(out),
            Exec::Install(pool) => pool.install(|| run(out)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_sum_is_the_same_on_any_number_of_threads() {
        // Values whose sum depends on the order of the additions.
        let x: Vec<f64> = (0..9 * MIN_CHUNK + 11)
            .map(|i| 1.0 / (i as f64 + 1.0) * if i % 3 == 0 { 1e8 } else { 1.0 })
            .collect();
        let leaf = |s: &[f64]| s.iter().sum::<f64>();
        let one = tree_sum(&x[..], leaf);
        set_num_threads(3).unwrap();
        let three = tree_sum(&x[..], leaf);
        set_num_threads(1).unwrap();
        assert_eq!(one.to_bits(), three.to_bits());
        let exact: f64 = x.iter().sum();
        assert!((one - exact).abs() <= 1e-12 * exact.abs());
        assert_eq!(tree_sum(&x[..5], leaf), x[..5].iter().sum::<f64>());
    }

    #[test]
    fn chunks_cover_every_element_once() {
        let mut a = vec![0u32; 5 * MIN_CHUNK + 7];
        let b: Vec<u32> = (0..a.len() as u32).collect();
        let mut c = vec![0u32; a.len()];
        set_num_threads(2).unwrap();
        for_chunks((&mut a[..], &b[..], Some(&mut c[..])), |(a, b, c)| {
            for ((x, y), z) in a.iter_mut().zip(b).zip(c.unwrap().iter_mut()) {
                *x += y + 1;
                *z += 1;
            }
        });
        set_num_threads(1).unwrap();
        assert!(a.iter().enumerate().all(|(i, &x)| x == i as u32 + 1));
        assert!(c.iter().all(|&z| z == 1));
    }
}
