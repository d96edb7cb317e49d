//! Concurrent use never hangs: two optimizers stepping the same parameters
//! from two threads on a shared pool, the thread count changed mid-step, a
//! model averaged with itself. Each case runs under a watchdog that fails
//! the test instead of hanging the suite.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use ferroptim::swa_utils::{AveragedModel, Averaging};
use ferroptim::{optim, Param, Tensor, MIN_CHUNK};

/// Runs `f` on its own thread; fails if it has not finished within `secs`.
fn within(secs: u64, what: &str, f: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        f();
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => worker.join().unwrap(),
        // The thread panicked: report its panic.
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: still running after {secs} s (deadlock)")
        }
    }
}

/// Parameters large enough to be cut into chunks, and small ones beside them.
fn shared_params() -> Vec<Param> {
    [3 * MIN_CHUNK, 5, 2 * MIN_CHUNK + 3, 17]
        .iter()
        .map(|&n| Param::from_vec(vec![0.5f32; n], &[n]).unwrap())
        .collect()
}

fn set_grads(params: &[Param]) {
    for p in params {
        let n = p.numel();
        let _ = p.set_grad(Tensor::from_vec(vec![0.25f32; n], &[n]).unwrap());
    }
}

#[test]
fn concurrent_steps_on_shared_parameters_finish() {
    let _threads = crate::thread_count_lock();
    within(120, "two optimizers on the same params", || {
        ferroptim::set_num_threads(2).unwrap();
        let params = shared_params();
        let stepping: Vec<_> = ["adam", "sgd", "adafactor"]
            .into_iter()
            .map(|name| {
                let params = params.clone();
                std::thread::spawn(move || {
                    let mut opt = optim::build(name, "{}", params.clone()).unwrap();
                    for _ in 0..150 {
                        set_grads(&params);
                        opt.step().unwrap();
                    }
                })
            })
            .collect();
        for t in stepping {
            t.join().unwrap();
        }
    });
}

#[test]
fn the_thread_count_may_change_while_another_thread_steps() {
    let _threads = crate::thread_count_lock();
    within(120, "set_num_threads during steps", || {
        let stop = Arc::new(AtomicBool::new(false));
        let toggler = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut n = 1;
                while !stop.load(Ordering::Relaxed) {
                    n = n % 4 + 1;
                    ferroptim::set_num_threads(n).unwrap();
                }
            })
        };
        let params = shared_params();
        let mut opt = optim::build("adamw", "{}", params.clone()).unwrap();
        for _ in 0..200 {
            set_grads(&params);
            opt.step().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        toggler.join().unwrap();
    });
}

#[test]
fn a_step_inside_another_rayon_pool_finishes() {
    let _threads = crate::thread_count_lock();
    within(120, "steps from a foreign rayon pool", || {
        ferroptim::set_num_threads(2).unwrap();
        let params = shared_params();
        let outer = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        outer.install(|| {
            rayon::scope(|s| {
                for name in ["adam", "rmsprop", "sgd", "nadam"] {
                    let params = params.clone();
                    s.spawn(move |_| {
                        let mut opt = optim::build(name, "{}", params.clone()).unwrap();
                        for _ in 0..40 {
                            set_grads(&params);
                            opt.step().unwrap();
                        }
                    });
                }
            })
        });
    });
}

#[test]
fn a_model_averaged_with_itself_is_unchanged() {
    within(30, "AveragedModel given its own params", || {
        let w = Param::from_vec(vec![1.0f64, -2.0, 0.1], &[3]).unwrap();
        for averaging in [Averaging::Swa, Averaging::ema(0.9).unwrap()] {
            let mut avg = AveragedModel::new(std::slice::from_ref(&w), averaging).unwrap();
            let own = avg.params().to_vec();
            let before = own[0].to_vec::<f64>().unwrap();
            for _ in 0..3 {
                avg.update_parameters(&own).unwrap();
            }
            let after = own[0].to_vec::<f64>().unwrap();
            for (a, b) in before.iter().zip(&after) {
                assert!(
                    (a - b).abs() <= 1e-15 * a.abs(),
                    "{averaging:?}: {before:?} -> {after:?}"
                );
            }
        }
    });
}

#[test]
fn an_absurd_thread_count_is_refused_at_once() {
    within(5, "set_num_threads(usize::MAX)", || {
        let err = ferroptim::set_num_threads(usize::MAX)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 1024"), "{err}");
    });
}
