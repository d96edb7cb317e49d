//! The `ferroptim` command: ferroptim's optimizers at work, with pictures.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferroptim::optim::registry::Drive;

mod bench;
mod data;
mod demo;
mod palette;
mod trajectories;

#[derive(Parser)]
#[command(
    name = "ferroptim",
    version,
    about = "PyTorch's torch.optim in Rust, at work"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trains a small MLP (candle autograd) on the UCI handwritten digits
    /// shipped in the repo, once per optimizer from the same start; prints a
    /// table and draws the loss curves (loss_curves.png and .svg).
    Demo {
        #[arg(long, value_delimiter = ',', help = optimizers_help("all but sparseadam, which needs sparse gradients"))]
        optimizers: Vec<String>,
        /// Passes over the training set (for LBFGS: full-batch steps).
        #[arg(long, default_value_t = 30)]
        epochs: usize,
        /// Examples per step.
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Seed of the initial weights and of the batch order (the
        /// train/test split is fixed).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Width of the hidden layer.
        #[arg(long, default_value_t = 64)]
        hidden: usize,
        /// Learning rates: one number for every optimizer, or
        /// name=value pairs (e.g. adam=0.01,sgd=0.1); others keep the demo's defaults.
        #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
        lr: Vec<String>,
        /// Train on MNIST instead: a directory with the four IDX files
        /// (train-images-idx3-ubyte, ... ; gzipped or not).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Where to write the pictures.
        #[arg(long, default_value = "ferroptim-out")]
        out: PathBuf,
        /// Print every optimizer with the implementation its numbers are
        /// proven against, and exit.
        #[arg(long)]
        list: bool,
        /// bf16: train each optimizer (default: sgd and adam) in float32 and
        /// with bfloat16 weights written back each way (round to nearest,
        /// master weights, stochastic rounding, Kahan summation), and plot
        /// them side by side.
        #[arg(long, default_value = "f32", value_parser = parse_dtype)]
        dtype: ferroptim::Dtype,
    },
    /// Runs every optimizer from the same start on classic test functions
    /// (Rosenbrock, Beale, a saddle, an ill-conditioned quadratic) and draws
    /// their paths over the level sets, one PNG per function.
    Trajectories {
        /// Where to write the pictures.
        #[arg(long, default_value = "ferroptim-out")]
        out: PathBuf,
        /// Steps per optimizer.
        #[arg(long, default_value_t = 300)]
        steps: usize,
        #[arg(long, value_delimiter = ',', help = optimizers_help("all of them"))]
        optimizers: Vec<String>,
    },
    /// Times every optimizer's step (f32, or `--dtype`) on 1 x 10M, 1000 x 10k and
    /// 100k x 100 parameters, against the memory floor measured in the same
    /// run, and prints a markdown table.
    Bench {
        #[arg(long, value_delimiter = ',', help = optimizers_help(
            "every one whose step is an element-wise pass with a memory floor; lbfgs and \
             sparseadam are not benched"
        ))]
        optimizers: Vec<String>,
        /// Repetitions per measurement (the median is reported).
        #[arg(long, default_value_t = 7)]
        reps: usize,
        /// Scale every size down by this factor (for a quick look).
        #[arg(long, default_value_t = 1)]
        shrink: usize,
        /// Print JSON lines instead of the table (for bench/compare_torch.py).
        #[arg(long)]
        json: bool,
        /// Comma-separated thread counts to measure (ferroptim::set_num_threads).
        #[arg(long, value_delimiter = ',', default_values_t = [1, 2])]
        threads: Vec<usize>,
        /// The dtype of the parameters, gradients and state: f32, bf16 or f16
        /// (the floor moves the same bytes).
        #[arg(long, default_value = "f32", value_parser = parse_dtype)]
        dtype: ferroptim::Dtype,
        /// With --dtype bf16 or f16: a group key turning on a 16-bit mode
        /// (master_weights, stochastic_rounding, kahan_summation); the floor
        /// is then the float32 step's.
        #[arg(long)]
        precision: Option<String>,
    },
}

/// `--dtype`'s names: torch's (`bfloat16`) or short (`bf16`).
fn parse_dtype(name: &str) -> Result<ferroptim::Dtype, String> {
    use ferroptim::Dtype;
    match name {
        "f32" | "float32" => Ok(Dtype::F32),
        "bf16" | "bfloat16" => Ok(Dtype::BF16),
        "f16" | "float16" => Ok(Dtype::F16),
        other => Err(format!("{other:?}: the bench runs f32, bf16 or f16")),
    }
}

fn bench(
    names: &[String],
    reps: usize,
    shrink: usize,
    json: bool,
    threads: &[usize],
    dtype: ferroptim::Dtype,
    precision: Option<&str>,
) -> Result<(), String> {
    let mut names = chosen(names)?;
    // What a dense step's time cannot be measured for, named explicitly: say why.
    for name in &names {
        let drive = ferroptim::optim::registry::entries()
            .find(|e| e.name == name)
            .map(|e| e.drive);
        let why = match drive {
            Some(Drive::Closure) if names.len() < all_names().len() => {
                "its step calls a closure that evaluates the loss up to max_eval times, so its \
                 time is the loss's (see the demo's steps/s instead)"
            }
            Some(Drive::Sparse) if names.len() < all_names().len() => {
                "it takes sparse gradients only; its time depends on how many rows they touch"
            }
            _ => continue,
        };
        return Err(format!("{name} is not benched: {why}"));
    }
    if names.len() == all_names().len() {
        // By default only the steps with a memory floor to compare against:
        // Muon's Newton–Schulz is O(n³) matrix products (seconds per step on
        // a 10M-element matrix), not an element-wise pass.
        let has_floor = |n: &String| {
            let entry = ferroptim::optim::registry::entries().find(|e| e.name == n);
            entry.is_some_and(|e| e.floor.is_some())
        };
        names.retain(has_floor);
    }
    if reps == 0 || shrink == 0 {
        return Err("--reps and --shrink must be at least 1".into());
    }
    let sizes: Vec<bench::Size> = bench::SIZES
        .iter()
        .map(|s| bench::Size {
            count: s.count,
            numel: (s.numel / shrink).max(1),
        })
        .collect();
    let mut rows = Vec::new();
    for &t in threads {
        rows.extend(bench::run(&names, &sizes, reps, t, dtype, precision)?);
    }
    if json {
        for r in &rows {
            let line = serde_json::json!({
                "optimizer": r.optimizer, "dtype": r.dtype, "count": r.size.count, "numel": r.size.numel,
                "threads": r.threads, "ms": r.ms, "floor_ms": r.floor_ms, "gb_per_s": r.gb_per_s,
            });
            println!("{line}");
        }
    } else {
        print!("{}", bench::table(&rows));
    }
    Ok(())
}

/// The optimizers to run: all by default, else the named ones (checked).
/// `--optimizers`' help: what the default is, and every name of ferroptim's registry.
fn optimizers_help(default: &str) -> String {
    format!(
        "Comma-separated optimizer names (default: {default}) [names: {}]",
        all_names().join(", ")
    )
}

/// Every optimizer the CLI knows: the registry's, then the wrappers (Lookahead).
fn all_names() -> Vec<&'static str> {
    ferroptim::optim::registry::entries()
        .map(|e| e.name)
        .collect()
}

fn chosen(names: &[String]) -> Result<Vec<String>, String> {
    if names.is_empty() {
        return Ok(all_names().into_iter().map(String::from).collect());
    }
    names
        .iter()
        .map(|n| {
            let n = n.trim().to_ascii_lowercase();
            if all_names().contains(&n.as_str()) {
                Ok(n)
            } else {
                Err(format!(
                    "unknown optimizer {n:?}; expected some of: {}",
                    all_names().join(", ")
                ))
            }
        })
        .collect()
}

/// The widest hidden layer the demo builds.
const MAX_HIDDEN: usize = 1 << 16;
/// The most weights the demo's MLP may have (1 GiB of f32, before moments).
const MAX_WEIGHTS: usize = 1 << 28;

/// The learning rate of each optimizer: the demo's default unless `--lr` sets it.
fn learning_rates(names: &[String], lr: &[String]) -> Result<Vec<f64>, String> {
    let parse = |v: &str| -> Result<f64, String> {
        v.trim()
            .parse::<f64>()
            .map_err(|_| format!("--lr: {v:?} is not a number"))
    };
    let mut rates = Vec::with_capacity(names.len());
    for name in names {
        let (default, _) =
            demo::default_config(name).ok_or_else(|| format!("the demo cannot run {name:?}"))?;
        rates.push(default);
    }
    for item in lr {
        match item.split_once('=') {
            None => rates.iter_mut().try_for_each(|r| {
                *r = parse(item)?;
                Ok::<_, String>(())
            })?,
            Some((name, value)) => {
                let name = name.trim().to_ascii_lowercase();
                let i = names.iter().position(|n| *n == name).ok_or_else(|| {
                    format!("--lr: {name:?} is not one of the optimizers being run")
                })?;
                rates[i] = parse(value)?;
            }
        }
    }
    Ok(rates)
}

fn run_demo(
    names: &[String],
    settings: &demo::Settings,
    lr: &[String],
    data: Option<&PathBuf>,
    out: &PathBuf,
    dtype: ferroptim::Dtype,
) -> Result<(), String> {
    let ways: &[demo::Weights] = match dtype {
        ferroptim::Dtype::F32 => &[demo::Weights::F32],
        ferroptim::Dtype::BF16 => &demo::Weights::COMPARED,
        other => {
            return Err(format!(
                "the demo trains float32 weights, or compares bfloat16 ones (--dtype bf16), not {other}"
            ))
        }
    };
    let names = match (names.is_empty(), dtype) {
        (false, _) => chosen(names)?,
        (true, ferroptim::Dtype::BF16) => vec!["sgd".to_string(), "adam".to_string()],
        (true, _) => demo::default_optimizers(),
    };
    let rates = learning_rates(&names, lr)?;
    if settings.epochs == 0 || settings.batch_size == 0 || settings.hidden == 0 {
        return Err("--epochs, --batch-size and --hidden must be at least 1".into());
    }
    if settings.hidden > MAX_HIDDEN {
        return Err(format!(
            "--hidden {} is more than {MAX_HIDDEN}, the widest the demo builds",
            settings.hidden
        ));
    }
    let data = match data {
        Some(dir) => data::mnist(dir)?,
        None => data::digits()?,
    };
    let weights = (data.dim + data.classes).saturating_mul(settings.hidden);
    if weights > MAX_WEIGHTS {
        return Err(format!(
            "an MLP {}-{}-{} has {weights} weights, more than the {MAX_WEIGHTS} the demo trains",
            data.dim, settings.hidden, data.classes
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    register_font()?;
    println!(
        "{}; MLP {}-{}-{}, {} epochs, batch {}, seed {}",
        data.name,
        data.dim,
        settings.hidden,
        data.classes,
        settings.epochs,
        settings.batch_size,
        settings.seed
    );
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:>10} [{bar:30}] epoch {pos}/{len} {elapsed}",
    )
    .map_err(|e| e.to_string())?
    .progress_chars("=> ");
    let mut runs = Vec::with_capacity(names.len());
    for (name, &rate) in names.iter().zip(&rates) {
        for &weights in ways {
            if weights.dtype == candle_core::DType::BF16
                && weights.mode.is_none()
                && !demo::rounds_to_nearest(name)
            {
                println!(
                    "{name}: torch has no bfloat16 path for it to round to nearest; \
                     its float32 modes only"
                );
                continue;
            }
            let bar = indicatif::ProgressBar::new(settings.epochs as u64)
                .with_style(style.clone())
                .with_prefix(name.clone());
            runs.push(demo::train(name, rate, &data, settings, weights, &bar)?);
            bar.finish_and_clear();
        }
    }
    print!("{}", demo::table(&runs));
    if dtype == ferroptim::Dtype::BF16 {
        let title = format!(
            "{}: float32 against bfloat16 weights, by how the update is written back",
            data.name
        );
        for file in ["bf16_modes.png", "bf16_modes.svg"] {
            let path = out.join(file);
            demo::draw_modes(&runs, &title, &path)?;
            println!("wrote {}", path.display());
        }
        return Ok(());
    }
    let title = format!("{}: training loss per epoch", data.name);
    for file in ["loss_curves.png", "loss_curves.svg"] {
        let path = out.join(file);
        demo::draw(&runs, &title, &path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn register_font() -> Result<(), String> {
    plotters::style::register_font(
        "sans-serif",
        plotters::style::FontStyle::Normal,
        include_bytes!("../assets/DejaVuSans.ttf"),
    )
    .map_err(|_| "the bundled font could not be loaded".to_string())
}

fn trajectories(out: &PathBuf, steps: usize, names: &[String]) -> Result<(), String> {
    let names = chosen(names)?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    register_font()?;
    for fun in &trajectories::FUNCTIONS {
        println!("{}", fun.title);
        let width = names.iter().map(String::len).max().unwrap_or(0).max(11);
        println!(
            "  {:<width$} {:>14} {:>16}",
            "optimizer", "final f(x, y)", "distance to min"
        );
        let mut paths = Vec::new();
        for name in &names {
            let path = trajectories::path(name, fun, steps)?;
            let &(x, y) = path.points.last().unwrap_or(&fun.start);
            let distance = fun.minimum.map_or("-".to_string(), |(mx, my)| {
                format!("{:.3e}", ((x - mx).powi(2) + (y - my).powi(2)).sqrt())
            });
            let note = path.non_finite_at.map_or(String::new(), |s| {
                format!("  (NaN at step {s}; last finite point shown)")
            });
            println!(
                "  {name:<width$} {:>14.4e} {distance:>16}{note}",
                (fun.f)(x, y)
            );
            paths.push(path);
        }
        let file = out.join(format!("trajectories_{}.png", fun.name));
        trajectories::draw(fun, &paths, &file)?;
        println!("  wrote {}", file.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // clap's first line says what was wrong; its usage block is left to --help.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("error: invalid arguments");
            eprintln!("{first} (see --help)");
            return ExitCode::from(2);
        }
    };
    let result = match &cli.command {
        Command::Demo {
            optimizers,
            epochs,
            batch_size,
            seed,
            hidden,
            lr,
            data,
            out,
            list,
            dtype,
        } => {
            if *list {
                let registry: Vec<_> = ferroptim::optim::registry::entries().collect();
                let name = registry.iter().map(|e| e.name.len()).max().unwrap_or(0);
                let torch = registry
                    .iter()
                    .map(|e| e.torch_name.len())
                    .max()
                    .unwrap_or(0);
                for e in registry {
                    println!(
                        "{:<name$}  {:<torch$}  {}",
                        e.name, e.torch_name, e.reference
                    );
                }
                return ExitCode::SUCCESS;
            }
            let settings = demo::Settings {
                epochs: *epochs,
                batch_size: *batch_size,
                seed: *seed,
                hidden: *hidden,
            };
            run_demo(optimizers, &settings, lr, data.as_ref(), out, *dtype)
        }
        Command::Trajectories {
            out,
            steps,
            optimizers,
        } => trajectories(out, *steps, optimizers),
        Command::Bench {
            optimizers,
            reps,
            shrink,
            json,
            threads,
            dtype,
            precision,
        } => bench(
            optimizers,
            *reps,
            *shrink,
            *json,
            threads,
            *dtype,
            precision.as_deref(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
