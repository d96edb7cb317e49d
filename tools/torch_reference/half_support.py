#!/usr/bin/env python3
"""Which of torch's optimizers step bfloat16 and float16 parameters on the CPU,
in which implementation (default, foreach=True, fused=True), and the dtype of
the state they keep: the starting point of the mixed-precision issue.

    .venv/bin/python tools/torch_reference/half_support.py

Prints one line per dtype and optimizer; nothing is written.
"""

from __future__ import annotations

import warnings

import torch

NAMES = ["SGD", "Adam", "AdamW", "Adamax", "Adadelta", "Adagrad", "RMSprop", "Rprop", "ASGD",
         "NAdam", "RAdam", "Adafactor", "Muon", "LBFGS", "SparseAdam"]


def one_step(cls, dtype, flags: dict) -> str:
    p = torch.nn.Parameter(torch.randn(4, 4, dtype=dtype))
    try:
        opt = cls([p], **flags)
        grad = torch.randn(4, 4, dtype=dtype)
        p.grad = grad.to_sparse() if cls is torch.optim.SparseAdam else grad
        if cls is torch.optim.LBFGS:
            opt.step(lambda: (p.float() ** 2).sum().to(dtype))
        else:
            opt.step()
    except Exception as e:  # torch's refusal, as it words it
        return f"{type(e).__name__}: {str(e)[:70]}"
    state = {k: str(v.dtype).removeprefix("torch.") for k, v in opt.state[p].items()
             if torch.is_tensor(v) and v.numel() > 1}
    return f"ok, state {state}"


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    for dtype in (torch.bfloat16, torch.float16):
        for name in NAMES:
            cls = getattr(torch.optim, name)
            modes = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
            results = [f"{mode}: {one_step(cls, dtype, dict(flags, lr=0.1) if name == 'SGD' else flags)}"
                       for mode, flags in modes.items()]
            print(str(dtype).removeprefix("torch."), name, " | ".join(results))


if __name__ == "__main__":
    main()
