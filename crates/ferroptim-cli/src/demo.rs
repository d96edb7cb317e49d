//! `ferroptim demo`: one small MLP (candle autograd) trained from the same
//! start by each ferroptim optimizer, with a table and loss curves.

use std::path::Path;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use ferroptim::optim::registry::{Drive, Entry};
use ferroptim::{optim, GroupSpec, Optimizer};
use ferroptim_candle::{BoxedOptim, CandleParam};
use plotters::prelude::*;

use crate::palette;
use serde_json::{json, Value};

use crate::data::{Dataset, SplitMix};

/// What one optimizer's run produced.
pub struct Run {
    /// The optimizer's name.
    pub name: String,
    /// Its learning rate.
    pub lr: f64,
    /// The training loss before training and after each epoch (whole training set).
    pub losses: Vec<f64>,
    /// Test accuracy at the end, in [0, 1].
    pub test_accuracy: f64,
    /// Optimizer steps taken.
    pub steps: usize,
    /// Wall time of the training loop, in seconds.
    pub seconds: f64,
    /// How the weights were kept.
    pub weights: Weights,
}

/// How the model's weights are kept: float32, or bfloat16 with one of the
/// ways an optimizer can write its update back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Weights {
    /// `F32` or `BF16`.
    pub dtype: DType,
    /// The group key that turns on a bfloat16 mode (`master_weights`,
    /// `stochastic_rounding`, `kahan_summation`); `None` for torch's
    /// round to nearest.
    pub mode: Option<&'static str>,
}

impl Weights {
    /// float32 weights, the default.
    pub const F32: Weights = Weights {
        dtype: DType::F32,
        mode: None,
    };

    /// float32, then bfloat16 written back in each way.
    pub const COMPARED: [Weights; 5] = [
        Weights::F32,
        Weights::bf16(None),
        Weights::bf16(Some("master_weights")),
        Weights::bf16(Some("stochastic_rounding")),
        Weights::bf16(Some("kahan_summation")),
    ];

    const fn bf16(mode: Option<&'static str>) -> Weights {
        Weights {
            dtype: DType::BF16,
            mode,
        }
    }

    /// Its place in [`Weights::COMPARED`] (its colour in the picture).
    fn rank(&self) -> usize {
        Self::COMPARED.iter().position(|w| w == self).unwrap_or(0)
    }

    /// A reader's name for it.
    pub fn label(&self) -> String {
        match (self.dtype, self.mode) {
            (DType::F32, _) => "float32".into(),
            (_, None) => "bf16, round to nearest".into(),
            (_, Some(mode)) => format!("bf16 + {}", mode.replace('_', " ")),
        }
    }
}

/// The demo's training settings.
pub struct Settings {
    /// Passes over the training set.
    pub epochs: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// Seed of the initial weights and the batch order.
    pub seed: u64,
    /// Width of the hidden layer.
    pub hidden: usize,
}

/// The optimizers the demo runs by default: every one with demo settings
/// in the registry (all but SparseAdam, which needs sparse gradients;
/// candle's are dense, and torch's SparseAdam refuses them too).
pub fn default_optimizers() -> Vec<String> {
    optim::registry::entries()
        .filter(|e| e.demo.is_some())
        .map(|e| e.name.to_string())
        .collect()
}

fn entry(name: &str) -> Option<&'static Entry> {
    optim::registry::entries().find(|e| e.name == name)
}

/// Each optimizer's learning rate for this problem, and the other
/// arguments that differ from torch's defaults (the registry's `demo`
/// column). Chosen by hand for a 64-64-10 MLP with batches of 32, not tuned
/// per seed.
pub fn default_config(name: &str) -> Option<(f64, Value)> {
    let mut config = entry(name)?.demo_config()?;
    let lr = config.as_object_mut()?.remove("lr")?.as_f64()?;
    Some((lr, config))
}

/// An MLP `dim -> hidden -> classes` with ReLU, as Vars: w1, b1, w2, b2.
/// Initialised as torch's `nn.Linear`: uniform in ±1/sqrt(fan_in).
struct Mlp {
    vars: Vec<Var>,
}

impl Mlp {
    fn new(
        dim: usize,
        hidden: usize,
        classes: usize,
        seed: u64,
        dtype: DType,
    ) -> candle_core::Result<Self> {
        let mut rng = SplitMix::new(seed);
        let mut layer = |fan_in: usize, shape: &[usize]| {
            let bound = 1.0 / (fan_in as f64).sqrt();
            let n = shape.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                .collect();
            Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?)
        };
        Ok(Mlp {
            vars: vec![
                layer(dim, &[hidden, dim])?,
                layer(dim, &[hidden])?,
                layer(hidden, &[classes, hidden])?,
                layer(hidden, &[classes])?,
            ],
        })
    }

    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let v = &self.vars;
        let h = x
            .matmul(&v[0].as_tensor().t()?)?
            .broadcast_add(v[1].as_tensor())?
            .relu()?;
        h.matmul(&v[2].as_tensor().t()?)?
            .broadcast_add(v[3].as_tensor())
    }

    fn loss(&self, x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
        // The loss in float32, as mixed-precision training takes it.
        candle_nn::loss::cross_entropy(&self.logits(x)?.to_dtype(DType::F32)?, y)
    }

    fn accuracy(&self, x: &Tensor, y: &Tensor) -> candle_core::Result<f64> {
        let predicted = self.logits(x)?.argmax(1)?;
        let right = predicted.eq(y)?.to_dtype(DType::F32)?.sum_all()?;
        Ok(right.to_scalar::<f32>()? as f64 / y.dims()[0] as f64)
    }
}

/// One optimizer step: from the gradients of a minibatch, or (LBFGS) with
/// a closure over the whole training set.
trait Stepper {
    fn step(&mut self, grads: &GradStore) -> Result<(), String>;
    fn step_with_loss(
        &mut self,
        loss: &mut dyn FnMut() -> candle_core::Result<Tensor>,
    ) -> Result<(), String>;
    /// `optimizer.train()` / `eval()`: Schedule-Free trains at one point
    /// and is evaluated at another (the others ignore it).
    fn set_mode(&mut self, train: bool) -> Result<(), String>;
}

impl Stepper for BoxedOptim {
    fn step(&mut self, grads: &GradStore) -> Result<(), String> {
        self.step_with(grads).map_err(|e| e.to_string())
    }

    fn step_with_loss(
        &mut self,
        loss: &mut dyn FnMut() -> candle_core::Result<Tensor>,
    ) -> Result<(), String> {
        BoxedOptim::step_with_loss(self, loss)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn set_mode(&mut self, train: bool) -> Result<(), String> {
        let opt: &mut dyn Optimizer = &mut **self;
        if train { opt.train() } else { opt.eval() }.map_err(|e| e.to_string())
    }
}

/// Muon (and any optimizer of matrices only) updates the weight matrices;
/// the biases go to AdamW (lr 0.005), as torch's docs pair them.
struct WithAdamWForBiases {
    matrices: BoxedOptim,
    adamw: BoxedOptim,
}

impl Stepper for WithAdamWForBiases {
    fn step(&mut self, grads: &GradStore) -> Result<(), String> {
        Stepper::step(&mut self.matrices, grads)?;
        Stepper::step(&mut self.adamw, grads)
    }

    fn step_with_loss(
        &mut self,
        _: &mut dyn FnMut() -> candle_core::Result<Tensor>,
    ) -> Result<(), String> {
        Err("this pairing steps from gradients only".into())
    }

    fn set_mode(&mut self, train: bool) -> Result<(), String> {
        self.matrices.set_mode(train)?;
        self.adamw.set_mode(train)
    }
}

fn build(
    name: &str,
    vars: &[&Var],
    lr: f64,
    extra: &Value,
    weights: Weights,
) -> Result<BoxedOptim, String> {
    let mut args = extra.clone();
    args["lr"] = json!(lr);
    let params = vars
        .iter()
        .enumerate()
        .map(|(i, v)| CandleParam::new((*v).clone(), i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut group = GroupSpec::new(params);
    if let Some(mode) = weights.mode {
        group = group.set(mode, true);
    }
    ferroptim_candle::build(name, &args.to_string(), vec![group])
        .map_err(|e| format!("{name}: {e}"))
}

fn stepper(
    entry: &Entry,
    model: &Mlp,
    lr: f64,
    extra: &Value,
    weights: Weights,
) -> Result<Box<dyn Stepper>, String> {
    let v = &model.vars;
    Ok(if entry.matrices_only {
        Box::new(WithAdamWForBiases {
            matrices: build(entry.name, &[&v[0], &v[2]], lr, extra, weights)?,
            adamw: build("adamw", &[&v[1], &v[3]], 0.005, &json!({}), weights)?,
        })
    } else {
        let all: Vec<&Var> = v.iter().collect();
        Box::new(build(entry.name, &all, lr, extra, weights)?)
    })
}

fn candle_err(e: candle_core::Error) -> String {
    e.to_string()
}

/// Trains a fresh MLP (the same start for every optimizer) with `name`,
/// its weights kept as `weights` says.
pub fn train(
    name: &str,
    lr: f64,
    data: &Dataset,
    settings: &Settings,
    weights: Weights,
    progress: &indicatif::ProgressBar,
) -> Result<Run, String> {
    let (_, extra) =
        default_config(name).ok_or_else(|| format!("no demo settings for {name:?}"))?;
    let entry = entry(name).ok_or_else(|| format!("unknown optimizer {name:?}"))?;
    let dev = Device::Cpu;
    let n = data.train_y.len();
    let inputs = |x: &[f32], rows: usize| {
        Tensor::from_slice(x, (rows, data.dim), &dev)?.to_dtype(weights.dtype)
    };
    let train_x = inputs(&data.train_x, n).map_err(candle_err)?;
    let train_y = Tensor::from_slice(&data.train_y, n, &dev).map_err(candle_err)?;
    let m = data.test_y.len();
    let test_x = inputs(&data.test_x, m).map_err(candle_err)?;
    let test_y = Tensor::from_slice(&data.test_y, m, &dev).map_err(candle_err)?;
    let model = Mlp::new(
        data.dim,
        settings.hidden,
        data.classes,
        settings.seed,
        weights.dtype,
    )
    .map_err(candle_err)?;
    let full_loss = |model: &Mlp| -> Result<f64, String> {
        let l = model.loss(&train_x, &train_y).map_err(candle_err)?;
        Ok(l.to_scalar::<f32>().map_err(candle_err)? as f64)
    };

    let mut losses = vec![full_loss(&model)?];
    let mut steps = 0;
    let start = Instant::now();
    let mut opt = stepper(entry, &model, lr, &extra, weights)?;
    if entry.drive == Drive::Closure {
        for _ in 0..settings.epochs {
            opt.set_mode(true)?;
            for _ in 0..entry.demo_full_batch.unwrap_or(1) {
                opt.step_with_loss(&mut || model.loss(&train_x, &train_y))?;
                steps += 1;
            }
            opt.set_mode(false)?;
            losses.push(full_loss(&model)?);
            progress.inc(1);
        }
    } else {
        let mut rng = SplitMix::new(settings.seed ^ 0x5EED);
        let mut order: Vec<u32> = (0..n as u32).collect();
        for _ in 0..settings.epochs {
            opt.set_mode(true)?;
            rng.shuffle(&mut order);
            let batches: Vec<Option<&[u32]>> = match entry.demo_full_batch {
                Some(steps) => vec![None; steps],
                None => order.chunks(settings.batch_size).map(Some).collect(),
            };
            for batch in batches {
                let loss = match batch {
                    None => model.loss(&train_x, &train_y),
                    Some(batch) => {
                        let idx =
                            Tensor::from_slice(batch, batch.len(), &dev).map_err(candle_err)?;
                        let x = train_x.index_select(&idx, 0).map_err(candle_err)?;
                        let y = train_y.index_select(&idx, 0).map_err(candle_err)?;
                        model.loss(&x, &y)
                    }
                }
                .map_err(candle_err)?;
                let grads = loss.backward().map_err(candle_err)?;
                opt.step(&grads)?;
                steps += 1;
            }
            // The loss (and the accuracy) where the model is evaluated.
            opt.set_mode(false)?;
            losses.push(full_loss(&model)?);
            progress.inc(1);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let test_accuracy = model.accuracy(&test_x, &test_y).map_err(candle_err)?;
    Ok(Run {
        name: name.to_string(),
        lr,
        losses,
        test_accuracy,
        steps,
        seconds,
        weights,
    })
}

/// The results as a markdown table (with a weights column when some run
/// kept them in bfloat16).
pub fn table(runs: &[Run]) -> String {
    let modes = runs.iter().any(|r| r.weights != Weights::F32);
    let mut out = String::from(if modes {
        "| optimizer | weights | lr | final train loss | test accuracy | time (s) | steps/s |\n|---|---|---:|---:|---:|---:|---:|\n"
    } else {
        "| optimizer | lr | final train loss | test accuracy | time (s) | steps/s |\n|---|---:|---:|---:|---:|---:|\n"
    });
    for r in runs {
        let last = r.losses.last().copied().unwrap_or(f64::NAN);
        let name = if modes {
            format!("{} | {}", r.name, r.weights.label())
        } else {
            r.name.clone()
        };
        out.push_str(&format!(
            "| {} | {} | {:.2e} | {:.1}% | {:.2} | {:.0} |\n",
            name,
            r.lr,
            last,
            100.0 * r.test_accuracy,
            r.seconds,
            r.steps as f64 / r.seconds.max(1e-9)
        ));
    }
    out
}

/// Draws the runs to `out` (PNG or SVG by its extension): the training
/// loss per epoch (log scale) in one panel per optimizer family, each on a
/// y-range taken from its data, and every run's test accuracy.
pub fn draw(runs: &[Run], title: &str, out: &Path) -> Result<(), String> {
    let size = (1500, 950);
    if out.extension().is_some_and(|e| e == "svg") {
        plot(
            SVGBackend::new(out, size).into_drawing_area(),
            runs,
            title,
            out,
        )
    } else {
        plot(
            BitMapBackend::new(out, size).into_drawing_area(),
            runs,
            title,
            out,
        )
    }
}

/// Draws runs of the same optimizers with their weights kept in different
/// ways (`ferroptim demo --dtype bf16`) to `out` (PNG or SVG): one panel
/// per optimizer, the training loss per epoch (log scale) of each way,
/// its final test accuracy in the legend.
pub fn draw_modes(runs: &[Run], title: &str, out: &Path) -> Result<(), String> {
    let mut names: Vec<&str> = Vec::new();
    for r in runs {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
    }
    let size = (750 * names.len().max(1) as u32, 650);
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", out.display());
    if out.extension().is_some_and(|e| e == "svg") {
        let root = SVGBackend::new(out, size).into_drawing_area();
        mode_panels(&root, runs, &names, title).map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))
    } else {
        let root = BitMapBackend::new(out, size).into_drawing_area();
        mode_panels(&root, runs, &names, title).map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))
    }
}

fn mode_panels<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    runs: &[Run],
    names: &[&str],
    title: &str,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 24))?;
    let panels = root.split_evenly((1, names.len().max(1)));
    for (panel, name) in panels.iter().zip(names) {
        let members: Vec<&Run> = runs.iter().filter(|r| r.name == *name).collect();
        let epochs = members.iter().map(|r| r.losses.len()).max().unwrap_or(1);
        let axis = loss_axis(members.iter().flat_map(|r| r.losses.iter().copied()));
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{name} (lr {})", members[0].lr), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(
                0f64..epochs.saturating_sub(1).max(1) as f64,
                axis.log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .y_desc("training loss")
            .label_style(("sans-serif", 15))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for run in &members {
            let color = palette::LINES[run.weights.rank() % palette::LINES.len()];
            let points = run
                .losses
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite() && **v > 0.0)
                .map(|(i, &v)| (i as f64, v));
            let width = if run.weights.mode.is_none() { 4 } else { 2 };
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(width)))?
                .label(format!(
                    "{}: {:.1}% test",
                    run.weights.label(),
                    100.0 * run.test_accuracy
                ))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.5))
            .label_font(("sans-serif", 15))
            .position(SeriesLabelPosition::LowerLeft)
            .draw()?;
    }
    Ok(())
}

/// Whether optimizer `name` steps bfloat16 parameters as torch does, each
/// operation rounded to nearest (the others take them only with one of the
/// float32 modes): asked of the optimizer itself, which refuses them if not.
pub fn rounds_to_nearest(name: &str) -> bool {
    let p = ferroptim::Param::new(ferroptim::Tensor::zeros(ferroptim::Dtype::BF16, &[2, 2]));
    ferroptim::optim::build(name, "{}", [p]).is_ok()
}

/// The loss axis: from the smallest positive loss to the largest, with a
/// margin; at most 30 decades, at least one; a decade around 1 when no loss
/// is finite and positive (all zero, NaN or empty), so that a log axis over
/// an empty or infinite range is never built.
fn loss_axis(losses: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in losses.filter(|v| v.is_finite() && *v > 0.0) {
        (lo, hi) = (lo.min(v), hi.max(v));
    }
    if lo > hi {
        // No finite positive loss at all (lo and hi are still their infinities).
        return 0.1..1.0;
    }
    let hi = hi.min(1e300);
    let lo = lo.max(hi * 1e-30).min(hi / 10.0);
    lo * 0.5..hi * 2.0
}

fn plot<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    runs: &[Run],
    title: &str,
    out: &Path,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", out.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 26))
        .map_err(|e| err(&e))?;
    // Three loss panels on top; below, the fourth and the accuracies, wider.
    let (top, bottom) = root.split_vertically(root.dim_in_pixel().1 / 2);
    let mut panels = top.split_evenly((1, 3));
    let (left, right) = bottom.split_horizontally(bottom.dim_in_pixel().0 / 3);
    panels.push(left);
    let epochs = runs
        .iter()
        .map(|r| r.losses.len())
        .max()
        .unwrap_or(1)
        .saturating_sub(1)
        .max(1);
    let families = palette::FAMILIES.len();
    // Named families first; "Others" only when an optimizer falls in it.
    let mut shown: Vec<usize> = (0..families - 1).collect();
    if runs
        .iter()
        .any(|r| palette::family(&r.name) == families - 1)
    {
        shown.push(families - 1);
    }
    let accuracy = if shown.len() > panels.len() {
        // An optimizer outside the named families: its own panel, the accuracies narrower.
        let (others, rest) = right.split_horizontally(right.dim_in_pixel().0 / 2);
        panels.push(others);
        rest
    } else {
        right
    };
    draw_panels(&panels, &shown, runs, epochs, &accuracy).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The loss panel of each family in `shown`, then the accuracies in `accuracy`.
fn draw_panels<DB: DrawingBackend>(
    panels: &[DrawingArea<DB, plotters::coord::Shift>],
    shown: &[usize],
    runs: &[Run],
    epochs: usize,
    accuracy: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (panel, &f) in panels.iter().zip(shown) {
        let members: Vec<&Run> = runs
            .iter()
            .filter(|r| palette::family(&r.name) == f)
            .collect();
        let axis = loss_axis(members.iter().flat_map(|r| r.losses.iter().copied()));
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{}{}", palette::FAMILIES[f].0, palette::FAMILIES[f].1),
                ("sans-serif", 17),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..epochs as f64, axis.log_scale())?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .y_desc("training loss")
            .label_style(("sans-serif", 15))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for run in &members {
            let color = palette::LINES[run.weights.rank() % palette::LINES.len()];
            let points = run
                .losses
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite() && **v > 0.0)
                .map(|(i, &v)| (i as f64, v));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(3)))?
                .label(format!("{} (lr {})", run.name, run.lr))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
        }
        if !members.is_empty() {
            // Curves fall from the upper left: the lower left stays clear.
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK.mix(0.5))
                .label_font(("sans-serif", 15))
                .position(SeriesLabelPosition::LowerLeft)
                .draw()?;
        }
    }
    accuracy_panel(accuracy, runs)
}

/// Test accuracy per optimizer as horizontal bars, best on top, the value
/// written at the end of each.
fn accuracy_panel<DB: DrawingBackend>(
    panel: &DrawingArea<DB, plotters::coord::Shift>,
    runs: &[Run],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let mut sorted: Vec<&Run> = runs.iter().collect();
    sorted.sort_by(|a, b| a.test_accuracy.total_cmp(&b.test_accuracy));
    let pct: Vec<f64> = sorted.iter().map(|r| 100.0 * r.test_accuracy).collect();
    let finite = pct.iter().copied().filter(|v| v.is_finite());
    let lo = finite.fold(100.0f64, f64::min);
    let lo = ((lo - 2.0) / 5.0).floor().max(0.0) * 5.0;
    let lo = if lo >= 100.0 { 95.0 } else { lo };
    let n = sorted.len().max(1);
    let mut chart = ChartBuilder::on(panel)
        .caption("Test accuracy after training", ("sans-serif", 17))
        .margin(10)
        .margin_right(30)
        .x_label_area_size(35)
        .y_label_area_size(90)
        .build_cartesian_2d(lo..100.0, 0f64..n as f64)?;
    let names: Vec<String> = sorted.iter().map(|r| r.name.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE.mix(0.0))
        .x_desc("% of the test set")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            let i = y.floor() as usize;
            if (y - i as f64 - 0.5).abs() < 1e-6 {
                names.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, &v) in pct.iter().enumerate() {
        let color = palette::LINES[0];
        let v = if v.is_finite() {
            v.clamp(lo, 100.0)
        } else {
            lo
        };
        let (y0, y1) = (i as f64 + 0.15, i as f64 + 0.85);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(lo, y0), (v, y1)],
            color.filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{v:.1}"),
            (v.min(100.0 - (100.0 - lo) * 0.06), i as f64 + 0.72),
            ("sans-serif", 13).into_font().color(&BLACK),
        )))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(losses: Vec<f64>) -> Run {
        Run {
            name: "adam".into(),
            lr: 0.1,
            losses,
            test_accuracy: 1.0,
            steps: 1,
            seconds: 0.1,
            weights: Weights::F32,
        }
    }

    /// The bfloat16 demo runs round to nearest for torch's 16-bit optimizers
    /// only; the others (Lion, Muon) still run the three float32 modes.
    #[test]
    fn only_torchs_16_bit_optimizers_round_to_nearest() {
        assert!(rounds_to_nearest("adam") && rounds_to_nearest("sgd"));
        assert!(!rounds_to_nearest("lion") && !rounds_to_nearest("muon"));
        let p = ferroptim::Param::new(ferroptim::Tensor::zeros(ferroptim::Dtype::BF16, &[2, 2]));
        let group = ferroptim::GroupSpec::new([p]).set("master_weights", true);
        assert!(ferroptim::optim::build("lion", "{}", vec![group]).is_ok());
    }

    #[test]
    fn any_losses_make_a_picture() {
        let dir = std::env::temp_dir().join(format!("ferroptim-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        crate::register_font().unwrap();
        let cases = [
            vec![],
            vec![0.0; 5],
            vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY],
            vec![f64::MAX, f64::MIN_POSITIVE, 1.0],
            vec![2.0, 1e-12, 0.0],
        ];
        for (i, losses) in cases.into_iter().enumerate() {
            let axis = loss_axis(losses.iter().copied());
            assert!(
                axis.start > 0.0 && axis.end.is_finite() && axis.start < axis.end,
                "{axis:?}"
            );
            assert!((axis.end / axis.start).log10() <= 31.0, "{axis:?}");
            for ext in ["png", "svg"] {
                let out = dir.join(format!("case{i}.{ext}"));
                draw(&[run(losses.clone()), run(vec![])], "losses", &out).unwrap();
                assert!(std::fs::metadata(&out).unwrap().len() > 100, "{out:?}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
