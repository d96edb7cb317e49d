"""Gradient clipping reference data (torch.nn.utils.clip_grad_norm_ / clip_grad_value_),
for tools/torch_reference/generate.py."""

from __future__ import annotations

import math

import torch

SHAPES = [(5, 9), (7,), (), (0, 3), (4,)]
# Parameter 4 never gets a gradient (torch skips it).
NORM_TYPES = [2.0, 1.0, math.inf, -math.inf, 3.0, 0.5, 0.0]
MAX_NORMS = [0.5, 1e3]


def grads_for(dtypes, seed, with_empty=True):
    """Gradients for SHAPES; the empty one only `with_empty` (torch refuses
    the infinity norms of an empty tensor)."""
    gen = torch.Generator().manual_seed(seed)
    grads = []
    for shape, dtype in zip(SHAPES, dtypes):
        skip = shape == (4,) or (shape == (0, 3) and not with_empty)
        grads.append(None if skip else 3.0 * torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype))
    return grads


def run_norm(tensor_json, num, dtypes, norm_type, max_norm, seed, poison=None, error_if_nonfinite=False,
             with_empty=True):
    grads = grads_for(dtypes, seed, with_empty)
    if poison is not None:
        grads[1].view(-1)[2] = poison
    params = [torch.nn.Parameter(torch.zeros(s, dtype=d)) for s, d in zip(SHAPES, dtypes)]
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.clone()
    case = {
        "kind": "norm", "norm_type": num(norm_type), "max_norm": max_norm, "error_if_nonfinite": error_if_nonfinite,
        "params": [{"dtype": str(d).removeprefix("torch."), "shape": list(s)} for s, d in zip(SHAPES, dtypes)],
        "grads": [None if g is None else tensor_json(g) for g in grads],
    }
    try:
        total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type,
                                               error_if_nonfinite=error_if_nonfinite)
    except RuntimeError as exc:
        case["error"] = str(exc)
        return case
    case["total_norm"] = num(total.item())
    case["total_norm_dtype"] = str(total.dtype).removeprefix("torch.")
    case["clipped"] = [None if p.grad is None else tensor_json(p.grad) for p in params]
    return case


def run_value(tensor_json, dtypes, clip_value, seed):
    grads = grads_for(dtypes, seed)
    grads[0].view(-1)[0] = float("nan")
    params = [torch.nn.Parameter(torch.zeros(s, dtype=d)) for s, d in zip(SHAPES, dtypes)]
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.clone()
    torch.nn.utils.clip_grad_value_(params, clip_value)
    return {
        "kind": "value", "clip_value": clip_value,
        "params": [{"dtype": str(d).removeprefix("torch."), "shape": list(s)} for s, d in zip(SHAPES, dtypes)],
        "grads": [None if g is None else tensor_json(g) for g in grads],
        "clipped": [None if p.grad is None else tensor_json(p.grad) for p in params],
    }


def generate(tensor_json, num) -> dict:
    f32, f64 = torch.float32, torch.float64
    dtype_sets = [[f32] * 5, [f64] * 5, [f32, f64, f32, f64, f32]]
    cases, seed = [], 0
    for dtypes in dtype_sets:
        for norm_type in NORM_TYPES:
            for max_norm in MAX_NORMS:
                seed += 1
                cases.append(run_norm(tensor_json, num, dtypes, norm_type, max_norm, seed,
                                      with_empty=not math.isinf(norm_type)))
        for norm_type in (math.inf, -math.inf):
            seed += 1
            cases.append(run_norm(tensor_json, num, dtypes, norm_type, 1.0, seed))
        for poison in (float("nan"), float("inf")):
            for error_if_nonfinite in (False, True):
                seed += 1
                cases.append(run_norm(tensor_json, num, dtypes, 2.0, 1.0, seed, poison, error_if_nonfinite))
        for clip_value in (0.5, 2.0):
            seed += 1
            cases.append(run_value(tensor_json, dtypes, clip_value, seed))
    return {"cases": cases}
