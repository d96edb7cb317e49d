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
        // Where the paths go (the function's usual domain is ±4.5).
        x: (-0.5, 4.0),
        y: (-1.0, 2.5),
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
    optim::registry::entries()
        .find(|e| e.name == name)
        .ok_or_else(|| format!("unknown optimizer {name:?}"))
}

/// Where an optimizer went from a function's start.
pub struct Trajectory {
    /// The optimizer's name.
    pub name: String,
    /// The points it visited, the start first.
    pub points: Vec<(f64, f64)>,
    /// The step at which it left the finite numbers, if it did (then the
    /// points stop before it).
    pub non_finite_at: Option<usize>,
}

/// The points an optimizer visits in `steps` steps from the function's start
/// (stopping early if it leaves the finite numbers).
pub fn path(name: &str, fun: &Function, steps: usize) -> Result<Trajectory, String> {
    // A 1 × 2 matrix, so that every optimizer (Muon takes only matrices) runs on it.
    let p = Param::from_vec(vec![fun.start.0, fun.start.1], &[1, 2]).map_err(|e| e.to_string())?;
    let entry = entry(name)?;
    let mut opt =
        optim::build(name, entry.trajectories, [p.clone()]).map_err(|e| format!("{name}: {e}"))?;
    // Schedule-Free's path is its training point y, where gradients are taken.
    opt.train().map_err(|e| format!("{name}: {e}"))?;
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
    let mut non_finite_at = None;
    for step in 1..=steps {
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
            non_finite_at = Some(step);
            break;
        }
        points.push((x, y));
    }
    Ok(Trajectory {
        name: name.to_string(),
        points,
        non_finite_at,
    })
}

/// The learning rate an optimizer runs with here (the registry's `trajectories` config).
fn lr_of(name: &str) -> String {
    let config = entry(name).map(|e| e.trajectories).unwrap_or("{}");
    let value: serde_json::Value = serde_json::from_str(config).unwrap_or_default();
    value["lr"]
        .as_f64()
        .map_or("default".into(), |lr| format!("{lr}"))
}

/// The legend entry of the paths `same` (equal point for point): their
/// names and learning rates, and where they stop being drawn.
fn label(fun: &Function, same: &[&Trajectory]) -> String {
    let names: Vec<String> = same
        .iter()
        .map(|t| format!("{} (lr {})", t.name, lr_of(&t.name)))
        .collect();
    let t = same[0];
    let mut text = names.join(" = ");
    if let Some(step) = t.non_finite_at {
        text.push_str(&format!(": overflows to NaN at step {step}"));
    } else if inside(fun, &t.points).len() < t.points.len() {
        text.push_str(": leaves the plot");
    }
    text
}

/// The part of a path inside the plotted domain (a path that leaves it is cut there).
fn inside(fun: &Function, path: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let ok =
        |&(x, y): &(f64, f64)| (fun.x.0..=fun.x.1).contains(&x) && (fun.y.0..=fun.y.1).contains(&y);
    path.iter().copied().take_while(ok).collect()
}

/// Draws the function's level sets and the paths to `out`, one panel per
/// optimizer family (the demo's), so that no panel holds more than a few
/// paths; paths that coincide point for point share one legend entry.
pub fn draw(fun: &Function, paths: &[Trajectory], out: &Path) -> Result<(), String> {
    let root = BitMapBackend::new(out, (1600, 1300)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", out.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(
            &format!(
                "{}: {} steps from the black dot",
                fun.title,
                paths.iter().map(|t| t.points.len()).max().unwrap_or(1) - 1
            ),
            ("sans-serif", 28),
        )
        .map_err(|e| err(&e))?;
    let families = crate::palette::FAMILIES.len();
    let mut shown: Vec<usize> = (0..families - 1).collect();
    if paths
        .iter()
        .any(|t| crate::palette::family(&t.name) == families - 1)
    {
        shown.push(families - 1);
    }
    let rows = shown.len().div_ceil(2);
    for (panel, &f) in root.split_evenly((rows, 2)).iter().zip(&shown) {
        let members: Vec<&Trajectory> = paths
            .iter()
            .filter(|t| crate::palette::family(&t.name) == f)
            .collect();
        panel_of(panel, fun, crate::palette::FAMILIES[f].0, &members).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The corner of the plot that the fewest path points fall in (a corner is
/// 45% of the width and 30% of the height), for the legend.
fn emptiest_corner(fun: &Function, members: &[&Trajectory]) -> SeriesLabelPosition {
    let (w, h) = (fun.x.1 - fun.x.0, fun.y.1 - fun.y.0);
    let corners = [
        (SeriesLabelPosition::UpperLeft, fun.x.0, fun.y.1 - 0.3 * h),
        (
            SeriesLabelPosition::UpperRight,
            fun.x.1 - 0.45 * w,
            fun.y.1 - 0.3 * h,
        ),
        (SeriesLabelPosition::LowerLeft, fun.x.0, fun.y.0),
        (SeriesLabelPosition::LowerRight, fun.x.1 - 0.45 * w, fun.y.0),
    ];
    let count = |&(_, x0, y0): &(SeriesLabelPosition, f64, f64)| {
        let inside =
            |&&(x, y): &&(f64, f64)| x >= x0 && x <= x0 + 0.45 * w && y >= y0 && y <= y0 + 0.3 * h;
        members
            .iter()
            .map(|t| t.points.iter().filter(inside).count())
            .sum::<usize>()
    };
    // The start dot counts too: the legend must not hide it.
    let start = |&(_, x0, y0): &(SeriesLabelPosition, f64, f64)| {
        let (x, y) = fun.start;
        usize::from(x >= x0 && x <= x0 + 0.45 * w && y >= y0 && y <= y0 + 0.3 * h) * 1000
    };
    corners
        .into_iter()
        .min_by_key(|c| count(c) + start(c))
        .map_or(SeriesLabelPosition::UpperLeft, |c| c.0)
}

fn panel_of<DB: DrawingBackend>(
    panel: &DrawingArea<DB, plotters::coord::Shift>,
    fun: &Function,
    title: &str,
    members: &[&Trajectory],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart = ChartBuilder::on(panel)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(45)
        .build_cartesian_2d(fun.x.0..fun.x.1, fun.y.0..fun.y.1)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .label_style(("sans-serif", 16))
        .draw()?;

    // Filled level sets: log-scaled heights in 16 bands.
    let (nx, ny) = (160, 130);
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
    chart.draw_series(cells.iter().map(|&(i, j, v)| {
        let band = (level(v) * 16.0).floor().clamp(0.0, 15.0) / 15.0;
        // Light grey-blue to mid grey: dark enough for contrast, light enough for the paths.
        let shade = |a: f64, b: f64| (a + (b - a) * band) as u8;
        let color = RGBColor(
            shade(246.0, 150.0),
            shade(248.0, 158.0),
            shade(252.0, 178.0),
        );
        let (x0, y0) = (fun.x.0 + i as f64 * dx, fun.y.0 + j as f64 * dy);
        Rectangle::new([(x0, y0), (x0 + dx, y0 + dy)], color.filled())
    }))?;

    // Paths equal point for point are one line with one entry.
    let mut groups: Vec<Vec<&Trajectory>> = Vec::new();
    for &t in members {
        match groups.iter_mut().find(|g| g[0].points == t.points) {
            Some(g) => g.push(t),
            None => groups.push(vec![t]),
        }
    }
    for (k, same) in groups.iter().enumerate() {
        let color = crate::palette::LINES[k % crate::palette::LINES.len()];
        let points = inside(fun, &same[0].points);
        // One segment at a time: a thick polyline's mitred joins would draw
        // long spikes where a path turns back sharply.
        let segments = points
            .windows(2)
            .map(|w| PathElement::new(vec![w[0], w[1]], color.stroke_width(3)));
        chart
            .draw_series(segments)?
            .label(label(fun, same))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(4))
            });
        if let Some(&end) = points.last() {
            chart.draw_series(std::iter::once(Circle::new(end, 5, color.filled())))?;
        }
    }
    chart.draw_series(std::iter::once(Circle::new(fun.start, 7, BLACK.filled())))?;
    if let Some(m) = fun.minimum {
        chart.draw_series(std::iter::once(Cross::new(m, 10, RED.stroke_width(3))))?;
    }
    if !groups.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.5))
            .label_font(("sans-serif", 16))
            .position(emptiest_corner(fun, members))
            .draw()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legends_say_what_the_lines_do_not() {
        let saddle = &FUNCTIONS[2];
        let lbfgs = path("lbfgs", saddle, 300).unwrap();
        let step = lbfgs
            .non_finite_at
            .expect("LBFGS runs off to -inf on the saddle");
        assert!(label(saddle, &[&lbfgs]).ends_with(&format!("overflows to NaN at step {step}")));
        let adam = path("adam", saddle, 300).unwrap();
        assert!(label(saddle, &[&adam]).ends_with("leaves the plot"));
        // Adam and AdamW without weight decay coincide: drawn once, named together.
        let rosenbrock = &FUNCTIONS[0];
        let (adam, adamw) = (
            path("adam", rosenbrock, 50).unwrap(),
            path("adamw", rosenbrock, 50).unwrap(),
        );
        assert_eq!(adam.points, adamw.points);
        assert_eq!(
            label(rosenbrock, &[&adam, &adamw]),
            "adam (lr 0.05) = adamw (lr 0.05)"
        );
        // The legend never covers the start.
        for fun in &FUNCTIONS {
            let corner = emptiest_corner(fun, &[]);
            let (w, h) = (fun.x.1 - fun.x.0, fun.y.1 - fun.y.0);
            let (left, top) = (
                fun.start.0 < fun.x.0 + 0.45 * w,
                fun.start.1 > fun.y.1 - 0.3 * h,
            );
            let bottom = fun.start.1 < fun.y.0 + 0.3 * h;
            let right = fun.start.0 > fun.x.1 - 0.45 * w;
            let covered = match corner {
                SeriesLabelPosition::UpperLeft => left && top,
                SeriesLabelPosition::UpperRight => right && top,
                SeriesLabelPosition::LowerLeft => left && bottom,
                _ => right && bottom,
            };
            assert!(!covered, "{}", fun.name);
        }
    }
}
