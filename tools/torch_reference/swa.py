#!/usr/bin/env python3
"""Reference averages for ferroptim's swa_utils.AveragedModel, produced by torch.

    .venv/bin/python tools/torch_reference/swa.py

writes `crates/ferroptim/tests/fixtures/swa.json`: for each dtype and each
averaging (torch's default equal-weight SWA, and EMA via
get_ema_multi_avg_fn at several decays), a model's parameters after each of
UPDATES random-walk steps and the AveragedModel's parameters after each
update_parameters call; and the messages torch raises for invalid decays.
(SWALR's fixtures are in schedulers.py.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.optim import swa_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import tensor_json  # noqa: E402  (the fixtures' one JSON writer)

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "ferroptim" / "tests" / "fixtures" / "swa.json"
SHAPES = [(), (5, 9), (7,)]
UPDATES = 40
AVERAGING = [("swa", None), ("ema", 0.999), ("ema", 0.9), ("ema", 0.5), ("ema", 0.0), ("ema", 1.0)]


def run(kind, decay, dtype, seed) -> dict:
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype))
                                    for s in SHAPES])
    initial = [tensor_json(p) for p in model]
    kwargs = {} if kind == "swa" else {"multi_avg_fn": swa_utils.get_ema_multi_avg_fn(decay)}
    averaged = swa_utils.AveragedModel(model, **kwargs)
    updates = []
    for _ in range(UPDATES):
        with torch.no_grad():
            for p in model:
                p.add_(torch.randn(p.shape, generator=gen, dtype=dtype), alpha=0.1)
        averaged.update_parameters(model)
        updates.append({"model": [tensor_json(p) for p in model],
                        "averaged": [tensor_json(p) for p in averaged.module.parameters()]})
    return {"averaging": kind, "decay": decay, "dtype": str(dtype).removeprefix("torch."),
            "initial": initial, "updates": updates, "n_averaged": int(averaged.n_averaged)}


def main() -> None:
    torch.set_num_threads(1)
    cases, seed = [], 0
    for kind, decay in AVERAGING:
        for dtype in (torch.float32, torch.float64):
            seed += 1
            cases.append(run(kind, decay, dtype, seed))
    errors = []
    for decay in (1.5, -0.1):
        try:
            swa_utils.get_ema_multi_avg_fn(decay)
        except ValueError as e:
            errors.append({"decay": decay, "torch_message": str(e)})
    data = {"generator": "tools/torch_reference/swa.py", "torch_version": torch.__version__,
            "cases": cases, "errors": errors}
    OUT.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"{OUT.relative_to(ROOT)}: {len(cases)} cases, {OUT.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
