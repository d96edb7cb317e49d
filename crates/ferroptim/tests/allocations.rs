//! After the first step (which creates the state), a dense `step()` allocates
//! nothing, for every optimizer built by name except LBFGS (whose history
//! and line search allocate per step) and SparseAdam (whose sparse
//! gradients are coalesced into new buffers each step).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ferroptim::{optim, Param, Tensor};

/// Counts the allocations of the current thread (tests run on several).
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// Configurations that switch on each optimizer's optional state.
fn configs(name: &str) -> Vec<&'static str> {
    match name {
        "sgd" => vec![
            r#"{"lr": 0.1}"#,
            r#"{"lr": 0.1, "momentum": 0.9, "nesterov": true, "weight_decay": 0.1}"#,
        ],
        "adam" | "adamw" => vec!["{}", r#"{"amsgrad": true, "maximize": true}"#],
        "rmsprop" => vec!["{}", r#"{"centered": true, "momentum": 0.9}"#],
        "nadam" | "radam" => vec![
            "{}",
            r#"{"decoupled_weight_decay": true, "weight_decay": 0.1}"#,
        ],
        _ => vec!["{}"],
    }
}

#[test]
fn a_dense_step_after_the_first_allocates_nothing() {
    for &name in optim::NAMES
        .iter()
        .filter(|&&n| n != "lbfgs" && n != "sparseadam")
    {
        for dtype in ["f32", "f64"] {
            for config in configs(name) {
                // Matrices, so that Muon runs too; the 4 x 3 one is factored by Adafactor.
                let params: Vec<Param> = [[4usize, 3], [3, 5]]
                    .iter()
                    .map(|s| match dtype {
                        "f32" => Param::zeros::<f32>(s),
                        _ => Param::zeros::<f64>(s),
                    })
                    .collect();
                let mut opt = optim::build(name, config, params.clone()).unwrap();
                opt.train().unwrap(); // Schedule-Free steps in train mode
                for p in &params {
                    let g = Tensor::from_vec(vec![0.25f64; p.numel()], &p.shape()).unwrap();
                    p.set_grad(g.to_dtype(p.dtype())).unwrap();
                }
                opt.step().unwrap();
                // The counter counts: a state_dict is built on the heap.
                let first = allocations();
                drop(opt.state_dict());
                assert!(
                    allocations() > first,
                    "the counting allocator counts nothing"
                );
                let before = allocations();
                for _ in 0..3 {
                    opt.step().unwrap();
                }
                let n = allocations() - before;
                assert_eq!(n, 0, "{name} {dtype} {config}: {n} allocations in 3 steps");
            }
        }
    }
}
