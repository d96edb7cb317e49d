//! `ferroptim bench`: step time of every optimizer against the memory floor.
//!
//! An optimizer step is memory-bound: per element it must read the
//! parameter, the gradient and its state and write the parameter and state
//! back. The floor is measured in the same run by a trivial kernel that
//! reads and writes the same number of arrays of the same size, so the
//! ratio says how close a step is to what the memory allows on this machine.

use std::hint::black_box;
use std::num::Wrapping;
use std::ops::{Add, AddAssign, Mul, Sub, SubAssign};
use std::time::Instant;

use ferroptim::optim::registry::{Drive, Entry, Floor};
use ferroptim::{optim, Dtype, GroupSpec, Optimizer, Param, Tensor};

/// A benchmark shape: `count` tensors of `numel` elements each.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub count: usize,
    pub numel: usize,
}

impl Size {
    pub fn label(&self) -> String {
        fn short(n: usize) -> String {
            match n {
                n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
                n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
                n => n.to_string(),
            }
        }
        format!("{} x {}", short(self.count), short(self.numel))
    }
}

/// The sizes: one large tensor, many medium ones, very many small ones.
pub const SIZES: [Size; 3] = [
    Size {
        count: 1,
        numel: 10_000_000,
    },
    Size {
        count: 1_000,
        numel: 10_000,
    },
    Size {
        count: 100_000,
        numel: 100,
    },
];

/// The registry's row for `name`.
fn entry(name: &str) -> Result<&'static Entry, String> {
    optim::registry::entries()
        .find(|e| e.name == name)
        .ok_or_else(|| format!("unknown optimizer {name:?}"))
}

/// Median seconds of `f` over `reps` runs after one warm-up run.
fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The floor: the passes of `floor` over every tensor of `size`, each pass
/// reading its arrays and writing back the first of them, element by
/// element — the bytes a step must move, with no arithmetic to speak of
/// (zipped slices, so it vectorises). A tensor's passes run one after the
/// other, as a step's do, so that a tensor small enough to stay in cache
/// between them costs the floor what it costs the step. With `threads > 1`
/// the tensors, and large tensors' halves, are spread over that many
/// threads, as a step's are.
///
/// The arrays hold elements of the step's dtype: `f32`, or, for the 16-bit
/// dtypes, 16-bit integers with wrapping arithmetic (the same bytes, and an
/// op as cheap as the floor's `f32` ones).
pub fn floor_secs(
    size: Size,
    floor: Floor,
    reps: usize,
    threads: usize,
    dtype: Dtype,
) -> Result<f64, String> {
    match dtype.size() {
        4 => floor_secs_of::<f32>(size, floor, reps, threads),
        2 => floor_secs_of::<Wrapping<u16>>(size, floor, reps, threads),
        _ => Err(format!(
            "the bench runs float32, bfloat16 and float16 steps, not {dtype}"
        )),
    }
}

/// An element of the floor's arrays: `f32`, or a 16-bit stand-in of the
/// same width as `bf16` and `f16`.
pub trait Lane:
    Copy
    + Default
    + Send
    + Sync
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + AddAssign
    + SubAssign
{
    /// The starting value of array `k`.
    fn start(k: usize) -> Self;
    /// Half the value (the floor's stand-in for a decay).
    fn halve(self) -> Self;
}

impl Lane for f32 {
    fn start(k: usize) -> Self {
        k as f32 * 0.5
    }
    #[inline(always)]
    fn halve(self) -> Self {
        self * 0.5
    }
}

impl Lane for Wrapping<u16> {
    fn start(k: usize) -> Self {
        Wrapping(k as u16)
    }
    #[inline(always)]
    fn halve(self) -> Self {
        self >> 1
    }
}

fn floor_secs_of<E: Lane>(
    size: Size,
    floor: Floor,
    reps: usize,
    threads: usize,
) -> Result<f64, String> {
    let mut tensors: Vec<Vec<Vec<E>>> = (0..size.count)
        .map(|_| {
            (0..floor.arrays())
                .map(|k| vec![E::start(k); size.numel])
                .collect()
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| e.to_string())?;
    let chunk = size.numel.div_ceil(threads).max(ferroptim::MIN_CHUNK);
    // Each tensor's arrays as slices, made once: a step allocates nothing,
    // so neither does its floor (it made a small Vec per tensor and pass).
    let mut views: Vec<Vec<&mut [E]>> = tensors
        .iter_mut()
        .map(|arrays| arrays.iter_mut().map(Vec::as_mut_slice).collect())
        .collect();
    Ok(median_secs(reps, || {
        if threads == 1 {
            // As a one-thread step runs: on the calling thread, no pool.
            for arrays in &mut views {
                for pass in floor.passes {
                    floor_pass(&mut arrays[..pass.reads], pass.writes);
                }
            }
        } else {
            pool.install(|| {
                use rayon::prelude::*;
                views.par_iter_mut().for_each(|arrays| {
                    for pass in floor.passes {
                        floor_split(&mut arrays[..pass.reads], pass.writes, chunk);
                    }
                })
            });
        }
        black_box(&views);
    }))
}

/// The floor's pass over `arrays`, cut in halves across threads down to
/// `chunk` (the halves' slices are made only for tensors that are cut).
fn floor_split<E: Lane>(arrays: &mut [&mut [E]], writes: usize, chunk: usize) {
    let n = arrays.first().map_or(0, |a| a.len());
    if n <= chunk || rayon::current_num_threads() == 1 {
        return floor_pass(arrays, writes);
    }
    let (mut left, mut right): (Vec<_>, Vec<_>) =
        arrays.iter_mut().map(|a| a.split_at_mut(n / 2)).unzip();
    rayon::join(
        || floor_split(&mut left, writes, chunk),
        || floor_split(&mut right, writes, chunk),
    );
}

fn floor_pass<E: Lane>(arrays: &mut [&mut [E]], writes: usize) {
    match (arrays, writes) {
        // SGD-momentum-like: read p, g, b; write p, b.
        ([p, b, g], 2) => {
            for ((p, b), g) in p.iter_mut().zip(b.iter_mut()).zip(g.iter()) {
                *b = b.halve() + *g;
                *p -= *b;
            }
        }
        // Adam-like: read p, m, v, g; write p, m, v.
        ([p, m, v, g], 3) => {
            for (((p, m), v), g) in p
                .iter_mut()
                .zip(m.iter_mut())
                .zip(v.iter_mut())
                .zip(g.iter())
            {
                *m = m.halve() + *g;
                *v = v.halve() + *g;
                *p -= *m - *v;
            }
        }
        // A reduction (LARS's two norms): read both, write neither; the sums
        // escape through `black_box`, so the reads cannot be dropped. Both
        // arrays stream at once, 32 lanes of each at a time, each into its
        // own sums, so that no one chain of additions bounds the loop.
        ([x, y], 0) => {
            const LANES: usize = 32;
            let (mut a, mut b) = ([E::default(); LANES], [E::default(); LANES]);
            for (x, y) in x.chunks_exact(LANES).zip(y.chunks_exact(LANES)) {
                for k in 0..LANES {
                    a[k] += x[k] * x[k];
                    b[k] += y[k] * y[k];
                }
            }
            black_box((a, b));
        }
        // Any other reduction: each array in turn.
        (arrays, 0) => {
            const LANES: usize = 32;
            let mut sum = [E::default(); LANES];
            for r in arrays.iter() {
                for r in r.chunks_exact(LANES) {
                    for k in 0..LANES {
                        sum[k] += r[k] * r[k];
                    }
                }
            }
            black_box(sum);
        }
        // Adafactor-like pass: read w, a, b; write w.
        ([w, a, b], 1) => {
            for ((w, a), b) in w.iter_mut().zip(a.iter()).zip(b.iter()) {
                *w = w.halve() + *a * *b;
            }
        }
        (arrays, _) => {
            // Any other mix: add the read arrays up and the sum into each
            // written one, a few lanes of every array at a time, so that all
            // arrays stream through at once, each crossing the memory bus
            // once per pass, as in a fused step.
            const LANES: usize = 64;
            let n = arrays.first().map_or(0, |a| a.len());
            let (written, read) = arrays.split_at_mut(writes);
            let mut start = 0;
            while start < n {
                let end = (start + LANES).min(n);
                let mut sum = [E::default(); LANES];
                for r in read.iter() {
                    for (s, r) in sum.iter_mut().zip(&r[start..end]) {
                        *s += *r;
                    }
                }
                for w in written.iter_mut() {
                    for (w, s) in w[start..end].iter_mut().zip(sum.iter()) {
                        *w += *s;
                    }
                }
                start = end;
            }
        }
    }
}

/// Median seconds per `step()` of optimizer `name` on `size`, its
/// parameters, gradients and state of `dtype`; `precision` is the group key
/// of a 16-bit mode (`master_weights`, ...) to turn on.
pub fn step_secs(
    name: &str,
    size: Size,
    reps: usize,
    dtype: Dtype,
    precision: Option<&str>,
) -> Result<f64, String> {
    let entry = entry(name)?;
    let config = entry.bench;
    let shape = if entry.matrices_only {
        let rows = (size.numel as f64).sqrt() as usize;
        vec![rows, size.numel / rows]
    } else {
        vec![size.numel]
    };
    let params: Vec<Param> = (0..size.count)
        .map(|_| Param::new(Tensor::zeros(dtype, &shape)))
        .collect();
    for p in &params {
        p.set_grad(Tensor::full(dtype, &shape, 1e-3))
            .map_err(|e| e.to_string())?;
    }
    let mut group = GroupSpec::new(params);
    if let Some(key) = precision {
        group = group.set(key, true);
    }
    let mut opt: Box<dyn Optimizer> =
        optim::build(name, config, vec![group]).map_err(|e| format!("{name}: {e}"))?;
    opt.train().map_err(|e| format!("{name}: {e}"))?; // Schedule-Free steps in train mode
    let mut error = None;
    let secs = median_secs(reps, || {
        if let Err(e) = opt.step() {
            error = Some(e.to_string());
        }
    });
    match error {
        Some(e) => Err(format!("{name}: {e}")),
        None => Ok(secs),
    }
}

/// One measured line.
pub struct Row {
    pub optimizer: String,
    pub dtype: Dtype,
    pub size: Size,
    pub threads: usize,
    pub ms: f64,
    pub gb_per_s: Option<f64>,
    pub floor_ms: Option<f64>,
}

/// Benchmarks `names` on `sizes` in `dtype`, each with its floor, `reps`
/// repetitions, with the step and the floor on `threads` threads.
///
/// With a `precision` mode, whose step mixes 16-bit and float32 arrays, the
/// floor is the float32 step's (Adam: 28 bytes an element, against 30 with
/// master weights, 26 with Kahan summation and 22 with stochastic
/// rounding): a ratio of 1 is a step as fast as float32's floor.
pub fn run(
    names: &[String],
    sizes: &[Size],
    reps: usize,
    threads: usize,
    dtype: Dtype,
    precision: Option<&str>,
) -> Result<Vec<Row>, String> {
    ferroptim::set_num_threads(threads).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for &size in sizes {
        for name in names {
            let floor = entry(name)?.floor;
            if entry(name)?.drive != Drive::Dense {
                continue; // closures and sparse gradients: not a dense step
            }
            let secs = step_secs(name, size, reps, dtype, precision)?;
            let bytes = floor
                .filter(|_| precision.is_none())
                .map(|f| (f.bytes_per_element(dtype.size()) * size.count * size.numel) as f64);
            let floor_dtype = if precision.is_some() {
                Dtype::F32
            } else {
                dtype
            };
            let floor = floor
                .map(|f| floor_secs(size, f, reps, threads, floor_dtype))
                .transpose()?;
            rows.push(Row {
                optimizer: match precision {
                    Some(key) => format!("{name} + {key}"),
                    None => name.clone(),
                },
                dtype,
                size,
                threads,
                ms: secs * 1e3,
                gb_per_s: bytes.map(|b| b / secs / 1e9),
                floor_ms: floor.map(|f| f * 1e3),
            });
        }
    }
    Ok(rows)
}

/// The rows as a markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| optimizer | dtype | size | threads | median ms/step | GB/s | floor ms | ratio to floor |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let gb = r.gb_per_s.map_or("-".into(), |g| format!("{g:.1}"));
        let floor = r.floor_ms.map_or("-".into(), |f| format!("{f:.2}"));
        let ratio = r
            .floor_ms
            .map_or("-".into(), |f| format!("{:.2}", r.ms / f));
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {gb} | {floor} | {ratio} |\n",
            r.optimizer,
            r.dtype,
            r.size.label(),
            r.threads,
            r.ms
        ));
    }
    out
}
