#!/usr/bin/env python3
"""ferroptim against torch, in one run, on the same sizes (f32).

    cargo build --release -p ferroptim-cli
    .venv/bin/python bench/compare_torch.py [--reps 5] [--out bench/results/DATE.md]

Times torch 2.15's step in its default (for-loop), foreach and fused (where
torch has a fused CPU kernel) forms at 1 and 2 threads, and `ferroptim bench
--json` (at the same thread counts, via ferroptim::set_num_threads), on 1 x 10M, 1000 x 10k and 100k x 100
parameters; prints a markdown table of medians and the ratio of ferroptim
to torch's fastest form. Not run by CI (it needs torch).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(1, 10_000_000), (1_000, 10_000), (100_000, 100)]
OPTIMIZERS = {
    "sgd": (torch.optim.SGD, {"lr": 0.01, "momentum": 0.9}),
    "adam": (torch.optim.Adam, {}),
    "adamw": (torch.optim.AdamW, {}),
    "adamax": (torch.optim.Adamax, {}),
    "adadelta": (torch.optim.Adadelta, {}),
    "adagrad": (torch.optim.Adagrad, {}),
    "rmsprop": (torch.optim.RMSprop, {}),
    "asgd": (torch.optim.ASGD, {}),
    "rprop": (torch.optim.Rprop, {}),
    "nadam": (torch.optim.NAdam, {}),
    "radam": (torch.optim.RAdam, {}),
    "adafactor": (torch.optim.Adafactor, {}),
}


def median_ms(step, reps: int) -> float:
    step()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def torch_ms(name, count, numel, mode, reps):
    cls, kwargs = OPTIMIZERS[name]
    params = [torch.zeros(numel, requires_grad=True) for _ in range(count)]
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    flags = {"default": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[mode]
    try:
        opt = cls(params, **kwargs, **flags)
        return median_ms(opt.step, reps)
    except (RuntimeError, TypeError, ValueError):
        return None  # this form does not exist for this optimizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    exe = ROOT / "target" / "release" / "ferroptim"
    lines = subprocess.run([str(exe), "bench", "--json", "--reps", str(args.reps)],
                           check=True, capture_output=True, text=True).stdout.splitlines()
    ours = {(r["optimizer"], r["count"], r["numel"], r["threads"]): r for r in map(json.loads, lines)}
    out = [f"# ferroptim vs torch {torch.__version__}, f32, {datetime.date.today()}",
           "",
           f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads available, "
           f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}. Medians of {args.reps} steps "
           "after a warm-up; ferroptim runs on the same number of threads as torch. `floor` is "
           "ferroptim's trivial kernel moving the same bytes on as many threads, measured in the same run.",
           "",
           "| optimizer | size | threads | torch default ms | foreach ms | fused ms | ferroptim ms | "
           "floor ms | ferroptim / torch fastest |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for count, numel in SIZES:
        for name in OPTIMIZERS:
            for threads in (1, 2):
                r = ours.get((name, count, numel, threads))
                torch.set_num_threads(threads)
                modes = {m: torch_ms(name, count, numel, m, args.reps) for m in ("default", "foreach", "fused")}
                best = min(v for v in modes.values() if v is not None)
                fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
                mine = r["ms"] if r else None
                floor = r["floor_ms"] if r else None
                ratio = "-" if mine is None else f"{mine / best:.2f}"
                size = f"{count} x {numel}"
                row = (f"| {name} | {size} | {threads} | {fmt(modes['default'])} | {fmt(modes['foreach'])} | "
                       f"{fmt(modes['fused'])} | {fmt(mine)} | {fmt(floor)} | {ratio} |")
                print(row, flush=True)
                out.append(row)
    text = "\n".join(out) + "\n"
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
