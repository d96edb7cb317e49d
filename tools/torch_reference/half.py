#!/usr/bin/env python3
"""Reference data for ferroptim's 16-bit parameters, produced by torch itself.

    .venv/bin/python tools/torch_reference/half.py            # every optimizer in HALF
    .venv/bin/python tools/torch_reference/half.py adam       # just one
    .venv/bin/python tools/torch_reference/half.py fused      # fused=True runs (FUSED)
    .venv/bin/python tools/torch_reference/half.py fused sgd  # just one of them

For each optimizer ferroptim steps in bfloat16 and float16, it runs the
configurations `generate.py` runs (torch's `optim_inputs_func_<name>` plus its
EXTRA_INPUTS) in both dtypes, on torch's default CPU path (single-tensor: each
tensor operation computed in float and rounded to the parameter's dtype, the
state in that dtype), and writes `crates/ferroptim/tests/fixtures/half/<name>.json`
in `generate.py`'s fixture format (no error inputs: those are dtype-free and
live in the main fixtures). The first configuration of each dtype that keeps a state also saves
torch's `state_dict()` at step MID_STEP with `torch.save`, as
`half/<name>-<dtype>.pt`: the Rust tests load it and continue where torch did.

`fused` runs the optimizers of FUSED with `fused=True` (torch's fused CPU
kernels: float math inside, one rounding per stored value) in float32,
float64, bfloat16 and float16, and writes `fixtures/fused/<name>.json`.

Which of torch's optimizers take 16-bit parameters at all: `half_support.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate as g  # noqa: E402

OUT_DIR = g.OUT_DIR / "half"
# The optimizers ferroptim steps in 16 bits (Algorithm::REDUCED), as torch's
# default path computes them.
HALF = ["sgd", "adam", "adamw", "adagrad", "rmsprop", "adadelta", "adamax", "nadam", "radam", "asgd", "rprop"]
DTYPES = [torch.bfloat16, torch.float16]
# torch's CPU loops run 2 x Vectorized<T>::size() elements at a time and the
# rest through a scalar loop, which rounds differently for 16-bit types (its
# `add(alpha)` rounds alpha and the product, its vector `fmadd` does not).
# With AVX-512 that is 64 elements for bfloat16/float16: the matrix has 90, so
# both loops produce part of the reference numbers.
SHAPES = [(), (10, 9), (7,), (0, 3)]


# torch's fused CPU kernels (fused=True), and the dtypes they take.
FUSED = ["adam", "adamw", "sgd", "adagrad"]
FUSED_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
FUSED_DIR = g.OUT_DIR / "fused"
# Implementation flags a fused run cannot combine with.
NOT_WITH_FUSED = {"foreach", "differentiable", "capturable", "fused"}
# torch's fused SGD cannot step a group where some parameters have a momentum
# buffer and others not yet (`_fused_sgd` passes `None` to the kernel: "expected
# Tensor as element 0 in argument 2"), so its runs give parameter 0 a gradient
# from the first step; parameter 2 still skips one.
FUSED_NO_GRAD = {"sgd": {(7, 2)}}


def generate(name: str, fused: bool = False) -> dict:
    """The default-path runs in DTYPES (each dtype's first state-keeping run
    also torch.saves its mid-run state_dict), or with `fused` the fused=True
    runs in FUSED_DTYPES."""
    cls, inputs_func, _ = g.OPTIMIZERS[name]
    cases, skipped = [], []
    configs = [(i.kwargs, i.desc) for i in inputs_func("cpu", torch.float32)]
    configs += g.EXTRA_INPUTS.get(name, [])
    seed = 2000 if fused else 1000
    saved = set()
    for kwargs, desc in configs:
        if g.has_tensor(kwargs) or (fused and NOT_WITH_FUSED & set(kwargs)):
            skipped.append({"desc": desc, "reason": "tensor-valued lr/betas, or a flag fused does not combine with"
                            if fused else "tensor-valued lr/betas are not supported"})
            continue
        if fused:
            kwargs = dict(kwargs, fused=True)
        for dtype in FUSED_DTYPES if fused else DTYPES:
            seed += 1
            dtype_name = str(dtype).removeprefix("torch.")
            case = {"desc": desc, "dtype": dtype_name, "kwargs": g.value_json(kwargs)}
            on_mid = None
            # SGD's first state-keeping configuration (its default keeps none).
            if not fused and dtype not in saved and (name != "sgd" or kwargs.get("momentum", 0) != 0):
                saved.add(dtype)
                path = OUT_DIR / f"{name}-{dtype_name}.pt"
                case["saved_mid"] = path.name
                on_mid = lambda opt, path=path: torch.save(opt.state_dict(), path)  # noqa: E731
            no_grad = FUSED_NO_GRAD.get(name, g.NO_GRAD) if fused else g.NO_GRAD
            case.update(g.run_case(cls, dict(kwargs), dtype, seed, False, SHAPES, on_mid=on_mid,
                                   lr_scale=g.group1_lr_scale(name, kwargs), no_grad=no_grad))
            cases.append(case)
    return {
        "generator": "tools/torch_reference/half.py" + (" fused" if fused else ""),
        "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "optimizer": name,
        "reference": g.reference_of(cls),
        "cases": cases,
        "errors": [],
        "skipped": skipped,
    }


def write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"{path.relative_to(g.ROOT)}: {len(data['cases'])} cases, {path.stat().st_size / 1e6:.2f} MB")


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    names = argv[1:] or HALF + ["fused"]
    if "fused" in names:
        # `fused [names]`: those of FUSED named after it (all by default).
        at = names.index("fused")
        names, fused = names[:at], names[at + 1:] or FUSED
        FUSED_DIR.mkdir(parents=True, exist_ok=True)
        for name in fused:
            write(FUSED_DIR / f"{name}.json", generate(name, fused=True))
    for name in names:
        write(OUT_DIR / f"{name}.json", generate(name))


if __name__ == "__main__":
    main(sys.argv)
