"""LBFGS reference data: torch's LBFGS on closures, for tools/torch_reference/generate.py.

LBFGS re-evaluates the objective inside `step(closure)`, so its fixtures hold
objectives instead of recorded gradients. Each objective computes its loss and
gradient by explicit formulas (no autograd), in the order the Rust tests
(crates/ferroptim/tests/lbfgs.rs) repeat them, so the tests compare the
optimizer and not two autograd engines:

* `rosenbrock`: the 4-D extended Rosenbrock function
  sum_i 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2 from (-1.2, 1, -1.2, 1), split
  over two parameters of shape (2,) to exercise the flattening. float64.
* `logistic`: L2-regularised logistic regression on 40 random points with 5
  features, parameters w (5,) and b (1,); float32 and float64. The penalty
  (0.1) keeps the stopping tests above float32's noise: with 0.01, the last
  iterations compare losses 1e-9 apart, below float32's resolution, and the
  number of evaluations then depends on the closure's rounding (torch's own
  float32 and float64 runs stop after 13 and 12 evaluations).

With `maximize`, the closure returns the negated objective (and gradient), so
maximizing it minimizes the objective.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

STEPS = 6
MID_STEP = 3
LOGISTIC_N, LOGISTIC_D, LOGISTIC_L2 = 40, 5, 0.1

CONFIGS = [
    ({"history_size": 3}, "history_size 3"),
    ({"history_size": 3, "line_search_fn": "strong_wolfe"}, "strong_wolfe, history_size 3"),
    ({"history_size": 10, "line_search_fn": "strong_wolfe", "max_iter": 8}, "strong_wolfe, history 10, max_iter 8"),
    ({"lr": 0.5, "max_iter": 5, "max_eval": 7, "tolerance_change": 1e-4, "history_size": 5},
     "lr 0.5, max_iter 5, max_eval 7, tolerance_change 1e-4"),
    ({"line_search_fn": "strong_wolfe", "max_eval": 12, "tolerance_grad": 1e-5},
     "strong_wolfe, max_eval 12, tolerance_grad 1e-5"),
]


def logistic_data(dtype):
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(LOGISTIC_N, LOGISTIC_D, generator=gen, dtype=torch.float64)
    true_w = torch.randn(LOGISTIC_D, generator=gen, dtype=torch.float64)
    y = (x @ true_w + 0.5 * torch.randn(LOGISTIC_N, generator=gen, dtype=torch.float64) > 0).to(torch.float64)
    return x.to(dtype), y.to(dtype)


def problem(name: str, dtype):
    """Initial parameter values and a function (params, sign) -> closure."""
    if name == "rosenbrock":
        init = [torch.tensor([-1.2, 1.0], dtype=dtype), torch.tensor([-1.2, 1.0], dtype=dtype)]

        def make(params, sign, calls):
            def closure():
                calls[0] += 1
                x = params[0].detach().tolist() + params[1].detach().tolist()
                f, g = 0.0, [0.0] * 4
                for i in range(3):
                    a = x[i + 1] - x[i] * x[i]
                    b = 1.0 - x[i]
                    f = f + (100.0 * (a * a) + b * b)
                    g[i] = g[i] + (-400.0 * x[i] * a - 2.0 * b)
                    g[i + 1] = g[i + 1] + 200.0 * a
                params[0].grad = torch.tensor([sign * g[0], sign * g[1]], dtype=dtype)
                params[1].grad = torch.tensor([sign * g[2], sign * g[3]], dtype=dtype)
                return torch.tensor(sign * f, dtype=dtype)
            return closure
        return init, make
    if name == "logistic":
        x, y = logistic_data(dtype)
        gen = torch.Generator().manual_seed(99)
        init = [0.1 * torch.randn(LOGISTIC_D, generator=gen, dtype=dtype), torch.zeros(1, dtype=dtype)]

        def make(params, sign, calls):
            w, b = params

            def closure():
                calls[0] += 1
                with torch.no_grad():
                    z = torch.mv(x, w) + b
                    loss = (F.softplus(z) - y * z).mean() + (0.5 * LOGISTIC_L2) * (w * w).sum()
                    r = (torch.sigmoid(z) - y) / LOGISTIC_N
                    gw = torch.mv(x.t(), r) + LOGISTIC_L2 * w
                    gb = r.sum().reshape(1)
                w.grad = sign * gw
                b.grad = sign * gb
                return sign * loss
            return closure
        return init, make
    raise ValueError(name)


def run(json_helpers, name: str, dtype, kwargs: dict, on_mid=None) -> dict:
    tensor_json, value_json = json_helpers["tensor_json"], json_helpers["value_json"]
    init, make = problem(name, dtype)
    params = [torch.nn.Parameter(t.clone()) for t in init]
    opt = torch.optim.LBFGS(params, **kwargs)
    sign = -1.0 if kwargs.get("maximize", False) else 1.0
    calls = [0]
    closure = make(params, sign, calls)

    def lbfgs_state():
        st = opt.state[params[0]]
        return {k: value_json(v) for k, v in st.items() if k != "al"}

    def state_dict():
        sd = opt.state_dict()
        return {
            "state": {str(k): {kk: value_json(vv) for kk, vv in v.items() if kk != "al"}
                      for k, v in sd["state"].items()},
            "param_groups": [{k: value_json(v) for k, v in g.items()} for g in sd["param_groups"]],
        }

    steps, sd_mid = [], None
    for step in range(STEPS):
        before = calls[0]
        loss = opt.step(closure)
        steps.append({
            "loss": float(loss),
            "closure_calls": calls[0] - before,
            "params": [tensor_json(p) for p in params],
            "state": lbfgs_state(),
        })
        if step + 1 == MID_STEP:
            sd_mid = state_dict()
            if on_mid is not None:
                on_mid(opt)
    return {
        "problem": name,
        "dtype": str(dtype).removeprefix("torch."),
        "kwargs": value_json(kwargs),
        "initial_params": [tensor_json(t) for t in init],
        "steps": steps,
        "mid_step": MID_STEP,
        "state_dict_mid": sd_mid,
        "state_dict_final": state_dict(),
    }


def generate(json_helpers, inputs_func, error_cases) -> dict:
    configs = [(i.kwargs, i.desc) for i in inputs_func("cpu", torch.float32)] + CONFIGS
    cases, skipped = [], []
    for kwargs, desc in configs:
        if any(isinstance(v, torch.Tensor) for v in kwargs.values()):
            skipped.append({"desc": desc, "reason": "tensor-valued lr is not supported"})
            continue
        for name, dtypes in (("rosenbrock", [torch.float64]), ("logistic", [torch.float32, torch.float64])):
            for dtype in dtypes:
                case = {"desc": desc}
                case.update(run(json_helpers, name, dtype, dict(kwargs)))
                cases.append(case)
    x32, y32 = logistic_data(torch.float32)
    x64, y64 = logistic_data(torch.float64)
    tensor_json = json_helpers["tensor_json"]
    return {
        "problems": {
            "logistic": {
                "l2": LOGISTIC_L2,
                "x": {"float32": tensor_json(x32), "float64": tensor_json(x64)},
                "y": {"float32": tensor_json(y32), "float64": tensor_json(y64)},
            }
        },
        "cases": cases,
        "skipped": skipped,
    }
