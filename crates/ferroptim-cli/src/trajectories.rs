//! `ferroptim trajectories`: every optimizer from the same start on classic
//! test functions, the paths drawn over the function's level sets.

use std::path::Path;

use ferroptim::optim::registry::{Drive, Entry};
use ferroptim::{optim, Param, SparseGrad, Tensor};
use plotters::prelude::*;

/// A two-variable test function with its gradient, domain and start.
pub struct Function {
    pub name: &'static str,
    pub title: &'static str,
    pub f: fn(f64, f64) -> f64,
    pub grad: fn(f64, f64) -> (f64, f64),
    pub x: (f64, f64),
    pub y: (f64, f64),
    pub start: (f64, f64),
    pub minimum: Option<(f64, f64)>,
}

pub const FUNCTIONS: [Function; 4] = [
    Function {
        name: "rosenbrock",
        title: "Rosenbrock  (1−x)² + 100(y−x²)²",
        f: |x, y| (1.0 - x).powi(2) + 100.0 * (y - x * x).powi(2),
        grad: |x, y| {
            (
                -2.0 * (1.0 - x) - 400.0 * x * (y - x * x),
                200.0 * (y - x * x),
            )
        },
        x: (-2.0, 2.0),
        y: (-1.0, 3.0),
        start: (-1.2, 1.0),
        minimum: Some((1.0, 1.0)),
    },
    Function {
        name: "beale",
        title: "Beale",
        f: |x, y| {
            (1.5 - x + x * y).powi(2)
                + (2.25 - x + x * y * y).powi(2)
                + (2.625 - x + x * y.powi(3)).powi(2)
        },
        grad: |x, y| {
            let (a, b, c) = (
                1.5 - x + x * y,
                2.25 - x + x * y * y,
                2.625 - x + x * y.powi(3),
            );
            (
                2.0 * a * (y - 1.0) + 2.0 * b * (y * y - 1.0) + 2.0 * c * (y.powi(3) - 1.0),
                2.0 * a * x + 4.0 * b * x * y + 6.0 * c * x * y * y,
            )
        },
        x: (-4.5, 4.5),
        y: (-4.5, 4.5),
        start: (1.0, 1.5),
        minimum: Some((3.0, 0.5)),
    },
    Function {
        name: "saddle",
        title: "Saddle  x² − y²",
        f: |x, y| x * x - y * y,
        grad: |x, y| (2.0 * x, -2.0 * y),
        x: (-2.0, 2.0),
        y: (-2.0, 2.0),
        start: (-1.8, 0.01),
        minimum: None,
    },
    Function {
        name: "ill_conditioned",
        title: "Ill-conditioned quadratic  x²/2 + 25y²",
        f: |x, y| 0.5 * x * x + 25.0 * y * y,
        grad: |x, y| (x, 50.0 * y),
        x: (-5.0, 5.0),
        y: (-2.0, 2.0),
        start: (-4.5, 1.5),
        minimum: Some((0.0, 0.0)),
    },
];

/// The hyperparameters each optimizer runs with here (the registry's
/// `trajectories` column): torch's defaults except a learning rate that
/// suits these functions' scale.
fn entry(name: &str) -> Result<&'static Entry, String> {
    optim::REGISTRY
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| format!("unknown optimizer {name:?}"))
}

/// The points an optimizer visits in `steps` steps from the function's start
/// (stopping early if it leaves the finite numbers).
pub fn path(name: &str, fun: &Function, steps: usize) -> Result<Vec<(f64, f64)>, String> {
    // A 1 × 2 matrix, so that every optimizer (Muon takes only matrices) runs on it.
    let p = Param::from_vec(vec![fun.start.0, fun.start.1], &[1, 2]).map_err(|e| e.to_string())?;
    let entry = entry(name)?;
    let mut opt =
        optim::build(name, entry.trajectories, [p.clone()]).map_err(|e| format!("{name}: {e}"))?;
    let point = |p: &Param| -> (f64, f64) {
        let v = p.to_vec::<f64>().unwrap_or_default();
        (v[0], v[1])
    };
    let set_grad = |p: &Param| -> ferroptim::Result<f64> {
        let (x, y) = point(p);
        let (gx, gy) = (fun.grad)(x, y);
        let g = Tensor::from_vec(vec![gx, gy], &[1, 2])?;
        if entry.drive == Drive::Sparse {
            p.set_sparse_grad(SparseGrad::new(vec![0], g)?)?;
        } else {
            p.set_grad(g)?;
        }
        Ok((fun.f)(x, y))
    };
    let mut points = vec![fun.start];
    for _ in 0..steps {
        if entry.drive == Drive::Closure {
            let mut closure = || set_grad(&p);
            opt.step_with_closure(&mut closure)
                .map_err(|e| format!("{name}: {e}"))?;
        } else {
            set_grad(&p).map_err(|e| e.to_string())?;
            opt.step().map_err(|e| format!("{name}: {e}"))?;
        }
        let (x, y) = point(&p);
        if !(x.is_finite() && y.is_finite()) {
            break;
        }
        points.push((x, y));
    }
    Ok(points)
}

/// The part of a path inside the plotted domain (a path that leaves it is cut there).
fn inside(fun: &Function, path: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let ok =
        |&(x, y): &(f64, f64)| (fun.x.0..=fun.x.1).contains(&x) && (fun.y.0..=fun.y.1).contains(&y);
    path.iter().copied().take_while(ok).collect()
}

/// Draws the function's level sets and every path to `out`.
pub fn draw(fun: &Function, paths: &[(String, Vec<(f64, f64)>)], out: &Path) -> Result<(), String> {
    let root = BitMapBackend::new(out, (1100, 900)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", out.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(fun.title, ("sans-serif", 28))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(fun.x.0..fun.x.1, fun.y.0..fun.y.1)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .draw()
        .map_err(|e| err(&e))?;

    // Filled level sets: log-scaled heights in 16 bands.
    let (nx, ny) = (220, 180);
    let (dx, dy) = (
        (fun.x.1 - fun.x.0) / nx as f64,
        (fun.y.1 - fun.y.0) / ny as f64,
    );
    let mut cells = Vec::with_capacity(nx * ny);
    for i in 0..nx {
        for j in 0..ny {
            let (x, y) = (
                fun.x.0 + (i as f64 + 0.5) * dx,
                fun.y.0 + (j as f64 + 0.5) * dy,
            );
            cells.push((i, j, (fun.f)(x, y)));
        }
    }
    let lo = cells.iter().map(|c| c.2).fold(f64::INFINITY, f64::min);
    let hi = cells.iter().map(|c| c.2).fold(f64::NEG_INFINITY, f64::max);
    let level =
        |v: f64| ((v - lo + 1e-3).ln() - 1e-3f64.ln()) / ((hi - lo + 1e-3).ln() - 1e-3f64.ln());
    chart
        .draw_series(cells.iter().map(|&(i, j, v)| {
            let band = (level(v) * 16.0).floor().clamp(0.0, 15.0) / 15.0;
            let shade = |a: f64, b: f64| (a + (b - a) * band) as u8;
            let color = RGBColor(shade(235.0, 60.0), shade(242.0, 70.0), shade(250.0, 120.0));
            let (x0, y0) = (fun.x.0 + i as f64 * dx, fun.y.0 + j as f64 * dy);
            Rectangle::new([(x0, y0), (x0 + dx, y0 + dy)], color.filled())
        }))
        .map_err(|e| err(&e))?;

    for (k, (name, path)) in paths.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        chart
            .draw_series(LineSeries::new(inside(fun, path), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
    }
    chart
        .draw_series(std::iter::once(Circle::new(fun.start, 6, BLACK.filled())))
        .map_err(|e| err(&e))?;
    if let Some(m) = fun.minimum {
        chart
            .draw_series(std::iter::once(Cross::new(m, 9, RED.stroke_width(3))))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
