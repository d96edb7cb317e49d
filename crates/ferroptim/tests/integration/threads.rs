//! The thread count changes how a step is split, never its numbers: every
//! dense optimizer gives the same bits on 1 and on 3 threads, on a
//! parameter large enough to be cut into chunks and on many small ones.

use ferroptim::{optim, Param, SparseGrad, Tensor, MIN_CHUNK};

/// Runs 4 steps of `name` with `config` on fresh parameters, with `threads` threads.
fn run(name: &str, config: &str, threads: usize) -> Vec<Vec<f32>> {
    ferroptim::set_num_threads(threads).unwrap();
    let sizes = [3 * MIN_CHUNK + 5, 7, 130, 1, 64];
    let params: Vec<Param> = sizes
        .iter()
        .map(|&n| {
            let v = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            Param::from_vec(v, &[n]).unwrap()
        })
        .collect();
    let mut opt = optim::build(name, config, params.clone()).unwrap();
    opt.train().unwrap(); // Schedule-Free steps in train mode
    for step in 0..4 {
        for p in &params {
            let n = p.numel();
            let g = (0..n)
                .map(|i| ((i * 13 + step * 7) % 29) as f32 / 10.0 - 1.4)
                .collect();
            p.set_grad(Tensor::from_vec(g, &[n]).unwrap()).unwrap();
        }
        opt.step().unwrap();
    }
    params.iter().map(|p| p.to_vec::<f32>().unwrap()).collect()
}

#[test]
fn threads_change_nothing_but_the_time() {
    let _threads = crate::thread_count_lock();
    for &name in optim::NAMES {
        if matches!(name, "lbfgs" | "sparseadam" | "muon") {
            continue; // closures, sparse gradients, matrices only
        }
        let one = run(name, "{}", 1);
        let three = run(name, "{}", 3);
        assert!(one == three, "{name}: 1 and 3 threads differ");
        assert_eq!(ferroptim::num_threads(), 3);
    }
    // The options whose per-tensor sums (the cautious mask's count,
    // StableAdamW's RMS) run over the threads' blocks. (In this test: the
    // thread count is global: `thread_count_lock` keeps the others out.)
    let options = r#"{"lr": 0.01, "cautious": true, "stable_adamw": true}"#;
    for name in ["adopt", "ademamix"] {
        let one = run(name, options, 1);
        let three = run(name, options, 3);
        assert!(one == three, "{name} {options}: 1 and 3 threads differ");
        assert!(
            one != run(name, r#"{"lr": 0.01}"#, 1),
            "{name}: the options do nothing"
        );
    }
    ferroptim::set_num_threads(1).unwrap();
}

/// A step checks every gradient before it updates anything, across the
/// threads too: with two bad gradients the error names the first, on any
/// thread count, and no parameter or state has moved.
#[test]
fn a_refused_step_names_the_first_bad_gradient_on_any_thread_count() {
    let _threads = crate::thread_count_lock();
    for threads in [1, 3] {
        ferroptim::set_num_threads(threads).unwrap();
        let params: Vec<Param> = (0..2000)
            .map(|i| Param::from_vec(vec![i as f32; 5], &[5]).unwrap())
            .collect();
        let mut opt = optim::build("adam", "{}", params.clone()).unwrap();
        let good = || Tensor::from_vec(vec![0.5f32; 5], &[5]).unwrap();
        for p in &params {
            p.set_grad(good()).unwrap();
        }
        opt.step().unwrap();
        let (before, values) = (
            opt.state_dict(),
            params.iter().map(Param::value).collect::<Vec<_>>(),
        );
        // Sparse gradients, which Adam refuses (set_grad refuses a wrong shape itself).
        for bad in [1709, 613] {
            let rows = Tensor::from_vec(vec![0.5f32], &[1]).unwrap();
            params[bad]
                .set_sparse_grad(SparseGrad::new(vec![2], rows).unwrap())
                .unwrap();
        }
        let err = opt.step().unwrap_err().to_string();
        assert!(err.contains("parameter 613"), "{threads} threads: {err}");
        assert_eq!(opt.state_dict(), before, "{threads} threads");
        assert!(
            params.iter().map(Param::value).eq(values),
            "{threads} threads"
        );
    }
    ferroptim::set_num_threads(1).unwrap();
}
