#!/usr/bin/env python3
"""Reference data for ferroptim, produced by PyTorch itself.

Run with torch 2.15 installed (see README.md beside this file):

    .venv/bin/python tools/torch_reference/generate.py

For every optimizer in OPTIMIZERS it writes
`crates/ferroptim/tests/fixtures/<name>.json` holding

* `cases`: one per (configuration, dtype). The configurations are torch's own
  `optim_inputs_func_<name>` (those that run on CPU with a float lr) plus a few
  extra ones listed below. Each case records the initial parameters, the
  gradient fed to each parameter at every step (`null` = no gradient that
  step), the parameters and full optimizer state after every step, and
  `state_dict()` after step MID_STEP and after the last step.
* `errors`: torch's `optim_error_inputs_func_<name>` plus extra invalid inputs,
  each with the message torch actually raised.
* `skipped`: the inputs that do not apply to ferroptim, with the reason.

Tensors are written as {"dtype": "float32"|"float64", "shape": [...],
"data": [...]} with every value as the exact double of the stored value, and
non-finite values as the strings "nan", "inf", "-inf".
"""

from __future__ import annotations

import inspect
import json
import math
import sys
import warnings
from pathlib import Path

import torch
from torch.testing._internal import common_optimizers as co

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / "crates" / "ferroptim" / "tests" / "fixtures"

STEPS = 20
MID_STEP = 10
# Parameter shapes, numbered in group order as torch's state_dict numbers them:
# group 0 holds params 0 and 1, group 1 holds params 2 and 3. The matrix has
# more than 32 elements so that torch's vectorised CPU loop (not only its
# scalar tail) produces part of the reference numbers.
SHAPES = [(), (5, 9), (7,), (0, 3)]
# Optimizers that need other shapes: Adafactor factors the last two
# dimensions of a batch of matrices (and divides by sqrt(numel), so no empty
# parameter); Muon takes matrices only (wide, tall and square ones). Adan
# with max_grad_norm fails on a 0-d parameter (its clip factor has shape
# [1] and multiplies the 0-d gradient in place), so it gets a [1] instead.
SHAPES_FOR = {
    "adan": [(1,), (5, 9), (7,), (0, 3)],
    "adafactor": [(), (5, 9), (7,), (2, 3, 4)],
    "muon": [(4, 3), (5, 9), (9, 5), (6, 6)],
    # SOAP preconditions every dimension; a 4-D parameter for data_format's
    # channels_last (its only effect), and no empty one (its statistics are
    # zero, so its eigenbasis is any basis at all).
    "soap": [(), (5, 9), (7,), (2, 3, 2, 2)],
}
GROUPS = [[0, 1], [2, 3]]
# The second group runs at this multiple of the first group's lr.
GROUP1_LR_SCALE = 0.5
# Prodigy's groups share one step size: a group's lr must be the largest or
# 0 (a group that takes no part in the D estimate). With a first moment the
# second group has lr 0; without one (beta1 = 0) a group of lr 0 is moved by
# its gradient over d*eps, a huge step, so it shares the first group's lr.
GROUP1_LR_SCALE_FOR = {
    "prodigy": lambda kwargs: 0.0 if kwargs.get("betas", (0.9,))[0] > 0 else 1.0,
}
# (step, param) pairs that get no gradient: param 0 starts late (lazy state),
# param 2 skips a step in the middle.
NO_GRAD = {(0, 0), (1, 0), (7, 2)}
DTYPES = [torch.float32, torch.float64]

# Optimizers that take sparse gradients, and which of their configurations
# also run with them (weight_decay needs dense gradients in torch's Adagrad).
# Sparse cases use embedding-like parameters of SPARSE_SHAPES: each step
# feeds an uncoalesced gradient of random rows, unsorted and with repeats
# (every fifth step more than 16 of them, so that torch's sort is not an
# insertion sort), and sometimes no rows at all.
SPARSE_CONFIGS = {
    "adagrad": lambda kwargs: kwargs.get("weight_decay", 0) == 0,
    "sparseadam": lambda kwargs: True,
}
SPARSE_ONLY = {"sparseadam"}
# Sparse configurations added after an optimizer's dense cases (so that
# the dense cases keep their seeds, and their committed numbers): SGD takes
# sparse gradients with any argument but weight_decay (torch raises
# "add(sparse, dense) is not supported" inside the step).
SPARSE_APPENDED = {
    "sgd": lambda kwargs: kwargs.get("weight_decay", 0) == 0,
}
SPARSE_SHAPES = [(9,), (6, 4), (5, 2, 3), (7, 3)]

# Configurations beyond torch's own lists, for arguments those lists leave out.
EXTRA_INPUTS = {
    "sgd": [
        ({"lr": 0.05, "momentum": 0.5, "dampening": 0.25, "weight_decay": 0.01, "maximize": True},
         "extra: dampening, weight_decay, maximize together"),
        ({"lr": 0.05, "momentum": 0.9, "nesterov": True, "maximize": True},
         "extra: nesterov, maximize"),
    ],
    "adam": [
        ({"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-6},
         "extra: non-default betas and eps"),
        ({"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
         "extra: decoupled_weight_decay (AdamW)"),
        ({"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True, "amsgrad": True,
          "maximize": True},
         "extra: decoupled_weight_decay, amsgrad, maximize"),
    ],
}

EXTRA_INPUTS.update({
    "adamax": [
        ({"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.05, "maximize": True},
         "extra: every argument"),
    ],
    "adadelta": [
        ({"lr": 0.5, "rho": 0.8, "eps": 1e-5, "weight_decay": 0.05, "maximize": True},
         "extra: every argument"),
    ],
    "adagrad": [
        ({"lr": 0.05, "lr_decay": 0.1, "weight_decay": 0.05, "initial_accumulator_value": 0.2,
          "eps": 1e-8, "maximize": True}, "extra: every argument"),
        ({"lr": 0.1, "lr_decay": 0.5, "initial_accumulator_value": 0.1, "eps": 1e-8, "maximize": True},
         "extra: every argument but weight_decay (so sparse gradients run too)"),
    ],
    "rmsprop": [
        ({"lr": 0.005, "alpha": 0.9, "eps": 1e-6, "weight_decay": 0.05, "momentum": 0.5, "centered": True,
          "maximize": True}, "extra: every argument"),
    ],
    "asgd": [
        ({"lr": 0.05, "lambd": 0.01, "alpha": 0.5, "t0": 5.0, "weight_decay": 0.05, "maximize": True},
         "extra: every argument, averaging from step 6"),
        ({"lr": 0.02, "t0": 0.0}, "extra: averaging from the first step"),
    ],
    "adamw": [
        ({"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1, "amsgrad": True, "maximize": True},
         "extra: every argument"),
    ],
    "nadam": [
        ({"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1, "momentum_decay": 0.01,
          "decoupled_weight_decay": True, "maximize": True}, "extra: every argument"),
    ],
    "radam": [
        ({"lr": 0.01, "betas": (0.8, 0.9), "eps": 1e-6, "weight_decay": 0.1, "decoupled_weight_decay": True,
          "maximize": True}, "extra: every argument, rectified from step 6 (beta2 0.9)"),
    ],
    "sparseadam": [
        ({"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-6, "maximize": True}, "extra: every argument"),
    ],
    "rprop": [
        ({"lr": 0.05, "etas": (0.3, 1.5), "step_sizes": (0.01, 0.1), "maximize": True},
         "extra: every argument, step sizes clamped at both ends"),
    ],
    "adafactor": [
        ({"lr": 0.05, "beta2_decay": -0.5, "eps": (1e-20, 1e-2), "d": 2.0, "weight_decay": 0.05,
          "maximize": True}, "extra: every argument"),
        ({"lr": 0.5}, "extra: lr above 1/sqrt(t) from step 5"),
    ],
    "muon": [
        ({"lr": 0.02, "weight_decay": 0.0, "momentum": 0.9, "nesterov": False, "eps": 1e-5},
         "extra: no nesterov, no weight decay"),
        ({"adjust_lr_fn": "original", "ns_steps": 1, "lr": 0.05}, "extra: original lr adjustment, one NS step"),
    ],
})

# Invalid inputs beyond torch's own error lists (the issue asks for these too).
EXTRA_ERRORS = {
    "sgd": [
        ({"lr": -0.1}, "extra: negative lr"),
        ({"lr": 0.1, "weight_decay": -0.5}, "extra: negative weight_decay"),
        ({"lr": 0.1, "nesterov": True}, "extra: nesterov without momentum"),
        ({"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True},
         "extra: nesterov with dampening"),
    ],
    "adam": [
        ({"lr": -0.001}, "extra: negative lr"),
        ({"eps": -1e-8}, "extra: negative eps"),
        ({"betas": (0.9, 1.0)}, "extra: beta2 equal to 1"),
        ({"betas": (-0.1, 0.999)}, "extra: negative beta1"),
    ],
}

EXTRA_ERRORS.update({
    "adamax": [({"lr": -0.1}, "extra: negative lr"), ({"betas": (0.9, 1.0)}, "extra: beta2 equal to 1"),
               ({"eps": -1.0}, "extra: negative eps"), ({"weight_decay": -0.1}, "extra: negative weight_decay")],
    "adadelta": [({"lr": -0.1}, "extra: negative lr"), ({"rho": 1.5}, "extra: rho above 1"),
                 ({"eps": -1.0}, "extra: negative eps"), ({"weight_decay": -0.1}, "extra: negative weight_decay")],
    "adagrad": [({"lr": -0.1}, "extra: negative lr"), ({"lr_decay": -0.1}, "extra: negative lr_decay"),
                ({"initial_accumulator_value": -1.0}, "extra: negative initial_accumulator_value"),
                ({"eps": -1.0}, "extra: negative eps")],
    "rmsprop": [({"lr": -0.1}, "extra: negative lr"), ({"alpha": -0.5}, "extra: negative alpha"),
                ({"momentum": -0.5}, "extra: negative momentum"), ({"eps": -1.0}, "extra: negative eps")],
    "asgd": [({"lr": -0.1}, "extra: negative lr")],
    "lbfgs": [({"lr": -0.5}, "extra: negative lr")],
    "adamw": [({"lr": -0.1}, "extra: negative lr"), ({"betas": (0.9, 1.0)}, "extra: beta2 equal to 1"),
              ({"weight_decay": -0.1}, "extra: negative weight_decay")],
    "nadam": [({"lr": -0.1}, "extra: negative lr"), ({"eps": -1.0}, "extra: negative eps"),
              ({"momentum_decay": -0.1}, "extra: negative momentum_decay")],
    "radam": [({"lr": -0.1}, "extra: negative lr"), ({"betas": (1.0, 0.999)}, "extra: beta1 equal to 1")],
    "sparseadam": [({"lr": 0.0}, "extra: lr of 0 (must be positive)"), ({"eps": 0.0}, "extra: eps of 0"),
                   ({"betas": (0.9, 1.0)}, "extra: beta2 equal to 1")],
    "rprop": [({"lr": -0.1}, "extra: negative lr"), ({"etas": (0.5, 0.9)}, "extra: eta_plus below 1"),
              ({"etas": (0.0, 1.2)}, "extra: eta_minus of 0")],
    "adafactor": [({"lr": -0.1}, "extra: negative lr"), ({"beta2_decay": 0.5}, "extra: positive beta2_decay"),
                  ({"eps": (None, -1.0)}, "extra: negative epsilon2"), ({"d": 0.5}, "extra: d below 1"),
                  ({"weight_decay": -0.1}, "extra: negative weight_decay")],
    "muon": [({"lr": -0.1}, "extra: negative lr"), ({"momentum": -0.1}, "extra: negative momentum"),
             ({"weight_decay": -0.1}, "extra: negative weight_decay")],
})

# Optimizers beyond torch.optim, from their authors' packages (pinned in
# requirements.txt). They have no optim_inputs_func in torch: their
# configurations are listed here, covering every argument of the reference,
# in the shape torch's lists have.
def _inputs(configs):
    from types import SimpleNamespace

    return lambda device, dtype: [SimpleNamespace(kwargs=k, desc=d) for k, d in configs]


def _error_inputs(cases, error_type=AssertionError):
    """Invalid arguments. A reference that checks them with bare `assert`s
    gives no message: the regex is then the message ferroptim gives instead.
    With a regex of None, ferroptim's message must be the reference's."""
    from types import SimpleNamespace

    return lambda device, dtype: [
        SimpleNamespace(optimizer_error_input=SimpleNamespace(params=None, kwargs=k, desc=d),
                        error_type=error_type, error_regex=r)
        for k, d, r in cases
    ]


def _lion():
    import lion_pytorch

    return (
        lion_pytorch.Lion,
        _inputs([
            ({}, "default (lr 1e-4)"),
            ({"lr": 0.01}, "lr"),
            ({"lr": 0.01, "betas": (0.8, 0.95)}, "betas"),
            ({"lr": 0.01, "weight_decay": 0.1}, "weight_decay"),
            ({"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
             "decoupled_weight_decay (weight_decay divided by the constructor's lr)"),
            ({"lr": 0.02, "betas": (0.0, 1.0), "weight_decay": 0.05},
             "betas at the ends of [0, 1]: the update is sgn(g), the momentum never moves"),
        ]),
        _error_inputs([
            ({"lr": 0.0}, "lr of 0 (must be positive)", r"^Invalid learning rate: 0\.0$"),
            ({"lr": -0.1}, "negative lr", r"^Invalid learning rate: -0\.1$"),
            ({"betas": (1.5, 0.99)}, "beta1 above 1", r"^Invalid beta parameter at index 0: 1\.5"),
            ({"betas": (0.9, -0.1)}, "negative beta2", r"^Invalid beta parameter at index 1: -0\.1"),
        ]),
    )


# pytorch-optimizer's checks, shared by its optimizers (its own messages); AdEMAMix
# takes a third beta.
def _pto_errors(*more_betas):
    return [
        ({"lr": -0.1}, "negative lr (0 is allowed)", None),
        ({"lr": 0.01, "betas": (1.0, 0.99, *more_betas)}, "beta1 of 1 (must be in [0, 1))", None),
        ({"lr": 0.01, "betas": (0.9, -0.1, *more_betas)}, "negative beta2", None),
        ({"lr": 0.01, "weight_decay": -0.1}, "negative weight_decay", None),
        ({"lr": 0.01, "eps": -1e-8}, "negative eps", None),
    ]


def _adopt():
    from pytorch_optimizer import ADOPT

    return (
        ADOPT,
        _inputs([
            ({}, "default (lr 1e-3)"),
            ({"lr": 0.01}, "lr"),
            ({"lr": 0.0}, "lr of 0 (allowed by the reference)"),
            ({"lr": 0.01, "betas": (0.8, 0.99)}, "betas"),
            ({"lr": 0.01, "eps": 0.5}, "eps large enough to floor sqrt(v)"),
            ({"lr": 0.01, "weight_decay": 0.1}, "weight_decay, coupled"),
            ({"lr": 0.01, "weight_decay": 0.1, "weight_decouple": True}, "weight_decay, decoupled"),
            ({"lr": 0.01, "weight_decay": 0.1, "weight_decouple": True, "fixed_decay": True},
             "weight_decay, decoupled and fixed"),
            ({"lr": 0.01, "maximize": True}, "maximize"),
            ({"lr": 0.01, "clip_lambda": None}, "clip_lambda None: no clipping"),
            ({"lr": 0.01, "cautious": True}, "cautious (the per-parameter path)"),
            ({"lr": 0.01, "stable_adamw": True}, "stable_adamw (the per-parameter path)"),
            ({"lr": 0.01, "cautious": True, "stable_adamw": True, "weight_decay": 0.05, "maximize": True},
             "cautious, stable_adamw, weight_decay and maximize"),
        ]),
        _error_inputs(_pto_errors(), ValueError),
    )


def _ademamix():
    from pytorch_optimizer import AdEMAMix

    return (
        AdEMAMix,
        _inputs([
            ({}, "default (lr 1e-3, alpha 5)"),
            ({"lr": 0.01}, "lr"),
            ({"lr": 0.01, "betas": (0.8, 0.99, 0.999)}, "betas"),
            ({"lr": 0.01, "betas": (0.9, 0.999, 1.0)}, "beta3 of 1 (allowed): the slow moment never moves"),
            ({"lr": 0.01, "alpha": 2.0, "eps": 1e-3}, "alpha and eps"),
            ({"lr": 0.01, "t_alpha_beta3": 8.0}, "t_alpha_beta3: alpha and beta3 warm up over 8 of the 20 steps"),
            ({"lr": 0.01, "weight_decay": 0.1}, "weight_decay, coupled"),
            ({"lr": 0.01, "weight_decay": 0.1, "weight_decouple": True}, "weight_decay, decoupled"),
            ({"lr": 0.01, "weight_decay": 0.1, "weight_decouple": True, "fixed_decay": True},
             "weight_decay, decoupled and fixed"),
            ({"lr": 0.01, "maximize": True}, "maximize"),
            ({"lr": 0.01, "cautious": True}, "cautious"),
            ({"lr": 0.01, "stable_adamw": True}, "stable_adamw"),
            ({"lr": 0.01, "cautious": True, "stable_adamw": True, "t_alpha_beta3": 8.0,
              "weight_decay": 0.05, "weight_decouple": True, "maximize": True},
             "cautious, stable_adamw, t_alpha_beta3, decoupled weight_decay and maximize"),
        ]),
        _error_inputs(_pto_errors(0.9999) + [
            ({"lr": 0.01, "betas": (0.9, 0.999, 1.5)}, "beta3 above 1", None),
            ({"lr": 0.01, "alpha": -1.0}, "negative alpha", None),
            ({"lr": 0.01, "t_alpha_beta3": -1.0}, "negative t_alpha_beta3", None),
        ], ValueError),
    )


def _lamb():
    from pytorch_optimizer import Lamb

    return (
        Lamb,
        _inputs([
            ({}, "default (lr 1e-3; the foreach path)"),
            ({"lr": 0.01}, "lr"),
            ({"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-3}, "betas and eps"),
            ({"lr": 0.01, "weight_decay": 0.1}, "weight_decay, decoupled (the default)"),
            ({"lr": 0.01, "weight_decay": 0.1, "fixed_decay": True}, "weight_decay, decoupled and fixed"),
            ({"lr": 0.01, "weight_decay": 0.1, "weight_decouple": False}, "weight_decay, coupled (added to the update)"),
            ({"lr": 0.01, "grad_averaging": False}, "grad_averaging off"),
            ({"lr": 0.01, "adam": True}, "adam: trust ratio 1"),
            ({"lr": 0.01, "adam_debias": True}, "adam_debias: no bias correction of the step"),
            ({"lr": 0.01, "pre_norm": True}, "pre_norm: gradients scaled by the global norm (max_grad_norm 1)"),
            ({"lr": 0.01, "pre_norm": True, "max_grad_norm": 100.0}, "pre_norm with a max_grad_norm that does not clip"),
            ({"lr": 0.01, "pre_norm": True, "max_grad_norm": 0.0}, "pre_norm with max_grad_norm 0 (off)"),
            ({"lr": 0.01, "maximize": True}, "maximize"),
            ({"lr": 0.01, "rectify": True}, "rectify (the per-parameter path; no step until n_sma >= 5)"),
            ({"lr": 0.01, "rectify": True, "degenerated_to_sgd": True}, "rectify, degenerated_to_sgd"),
            ({"lr": 0.01, "rectify": True, "n_sma_threshold": 4, "weight_decay": 0.1, "weight_decouple": False},
             "rectify, n_sma_threshold 4 (below 4 the reference fails: math domain error), coupled weight_decay (which rectify ignores)"),
            ({"lr": 0.01, "foreach": False}, "foreach False (the per-parameter path)"),
            ({"lr": 0.01, "foreach": False, "weight_decay": 0.1, "weight_decouple": False, "pre_norm": True},
             "foreach False, coupled weight_decay, pre_norm"),
            ({"lr": 0.01, "foreach": False, "adam": True, "maximize": True}, "foreach False, adam, maximize"),
            ({"lr": 0.01, "betas": (0.85, 0.98), "weight_decay": 0.05, "fixed_decay": True, "grad_averaging": False,
              "pre_norm": True, "max_grad_norm": 2.0, "maximize": True, "adam_debias": True},
             "every foreach argument at once"),
        ]),
        _error_inputs(_pto_errors() + [
            ({"lr": 0.01, "max_grad_norm": -1.0}, "negative max_grad_norm", None),
        ], ValueError),
    )


def _adan():
    from pytorch_optimizer import Adan

    return (
        Adan,
        _inputs([
            ({}, "default (lr 1e-3)"),
            ({"lr": 0.01}, "lr"),
            ({"lr": 0.01, "betas": (0.9, 0.9, 0.95)}, "betas"),
            ({"lr": 0.01, "eps": 1e-3}, "eps"),
            ({"lr": 0.01, "weight_decay": 0.1}, "weight_decay, coupled (a division of the parameter)"),
            ({"lr": 0.01, "weight_decay": 0.1, "weight_decouple": True}, "weight_decay, decoupled"),
            ({"lr": 0.01, "max_grad_norm": 1.0}, "max_grad_norm: gradients clipped by the global norm"),
            ({"lr": 0.01, "max_grad_norm": 100.0}, "max_grad_norm that does not clip"),
            ({"lr": 0.01, "maximize": True}, "maximize (the first difference is then -2g: the reference's)"),
            ({"lr": 0.01, "maximize": True, "max_grad_norm": 1.0}, "maximize and max_grad_norm"),
            ({"lr": 0.01, "foreach": False}, "foreach False (the per-parameter path)"),
            ({"lr": 0.01, "betas": (0.95, 0.9, 0.98), "eps": 1e-6, "weight_decay": 0.05, "weight_decouple": True,
              "max_grad_norm": 2.0, "maximize": True}, "every argument at once"),
        ]),
        _error_inputs(_pto_errors(0.99) + [
            ({"lr": 0.01, "max_grad_norm": -1.0}, "negative max_grad_norm", None),
        ], ValueError),
    )


def _prodigy():
    from prodigyopt import Prodigy

    return (
        Prodigy,
        _inputs([
            ({}, "default (lr 1, d0 1e-6; the second group has lr 0: no part in the estimate)"),
            ({"betas": (0.8, 0.99)}, "betas"),
            ({"beta3": 0.9}, "beta3 (default sqrt(beta2))"),
            ({"eps": 1e-6}, "eps"),
            ({"weight_decay": 0.1}, "weight_decay, decoupled (the default; the lr-0 group decays too)"),
            ({"weight_decay": 0.1, "decouple": False}, "weight_decay, coupled (added to the gradient)"),
            ({"use_bias_correction": True}, "use_bias_correction"),
            ({"safeguard_warmup": True}, "safeguard_warmup (no lr in s)"),
            ({"d0": 1e-3}, "d0"),
            ({"d_coef": 0.5}, "d_coef"),
            ({"growth_rate": 1.02}, "growth_rate (d grows by at most 2% a step)"),
            ({"slice_p": 3}, "slice_p 3: the estimate on every third element"),
            ({"lr": 0.5}, "lr 0.5 (a multiplier of the learned step)"),
            ({"betas": (0.0, 0.99)}, "beta1 0: no first moment (both groups at lr 1)"),
            ({"betas": (0.0, 0.99), "weight_decay": 0.1, "decouple": False},
             "beta1 0, coupled weight_decay (the gradient with its decay is the step)"),
            ({"lr": 0.8, "betas": (0.85, 0.98), "beta3": 0.95, "eps": 1e-7, "weight_decay": 0.05,
              "use_bias_correction": True, "safeguard_warmup": True, "d0": 1e-5, "d_coef": 2.0,
              "growth_rate": 1.5, "slice_p": 2}, "every argument at once"),
        ]),
        _error_inputs([
            ({"d0": 0.0}, "d0 of 0 (must be positive)", None),
            ({"lr": 0.0}, "lr of 0 (must be positive; a later group may have 0)", None),
            ({"lr": -0.1}, "negative lr", None),
            ({"eps": 0.0}, "eps of 0 (must be positive)", None),
            ({"betas": (1.0, 0.999)}, "beta1 of 1", None),
            ({"betas": (0.9, -0.1)}, "negative beta2", None),
        ], ValueError),
    )


def _timm_optimizer(module: str, name: str):
    """A class of timm's optimizers without importing timm itself: its package
    imports torchvision (for its models), which has no build for this torch;
    timm/optim needs only torch. Its modules keep their names (timm.optim.*)."""
    import importlib
    import importlib.util
    import sys
    import types

    root = Path(importlib.util.find_spec("timm").submodule_search_locations[0])
    for package, path in [("timm", root), ("timm.optim", root / "optim")]:
        if package not in sys.modules:
            stub = types.ModuleType(package)
            stub.__path__ = [str(path)]
            sys.modules[package] = stub
    return getattr(importlib.import_module(f"timm.optim.{module}"), name)


def _lars():
    return (
        _timm_optimizer("lars", "Lars"),
        _inputs([
            ({}, "default (lr 1.0, no adaptation: plain SGD)"),
            ({"lr": 0.1, "momentum": 0.9}, "momentum, no adaptation"),
            ({"lr": 0.1, "weight_decay": 0.01}, "weight_decay: adaptation on"),
            ({"lr": 0.1, "always_adapt": True}, "always_adapt without weight decay"),
            ({"lr": 0.1, "always_adapt": True, "trust_coeff": 0.02, "eps": 1e-3}, "trust_coeff and eps"),
            ({"lr": 0.1, "weight_decay": 0.01, "trust_clip": True}, "trust_clip (LARC)"),
            ({"lr": 0.01, "always_adapt": True, "trust_coeff": 0.5, "trust_clip": True},
             "trust_clip that clips"),
            ({"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}, "momentum, dampening and weight_decay"),
            ({"lr": 0.1, "momentum": 0.9, "nesterov": True, "always_adapt": True}, "nesterov"),
        ]),
        _error_inputs([
            ({"lr": -0.1}, "negative lr", None),
            ({"momentum": -0.1}, "negative momentum", None),
            ({"weight_decay": -0.1}, "negative weight_decay", None),
            ({"nesterov": True}, "nesterov without momentum", None),
        ], ValueError),
    )


def _sgd_schedulefree():
    from schedulefree import SGDScheduleFree

    return (
        SGDScheduleFree,
        _inputs([
            ({}, "default (lr 1.0, momentum 0.9)"),
            ({"lr": 0.1}, "lr"),
            ({"lr": 0.1, "momentum": 0.5}, "momentum"),
            ({"lr": 0.1, "weight_decay": 0.1}, "weight_decay"),
            ({"lr": 0.1, "warmup_steps": 5}, "warmup_steps"),
            ({"lr": 0.1, "r": 1.0}, "r: polynomial weighting"),
            ({"lr": 0.1, "weight_lr_power": 0.0}, "weight_lr_power 0: weights without the lr"),
            ({"lr": 0.0}, "lr of 0: every weight 0, c = 0 (the reference's ZeroDivisionError branch)"),
            ({"lr": 0.1, "momentum": 0.8, "weight_decay": 0.05, "warmup_steps": 4, "r": 0.5,
              "weight_lr_power": 1.0}, "every argument at once"),
            ({"lr": 0.1, "foreach": False}, "foreach False (the per-parameter path)"),
        ]),
        _error_inputs([
            ({"lr": -0.1}, "negative lr", None),
            ({"weight_decay": -0.1}, "negative weight_decay", None),
            ({"momentum": 0.0}, "momentum of 0", None),
            ({"momentum": 1.0}, "momentum of 1", None),
        ], ValueError),
    )


def _adamw_schedulefree():
    from schedulefree import AdamWScheduleFree

    return (
        AdamWScheduleFree,
        _inputs([
            ({}, "default (lr 0.0025)"),
            ({"lr": 0.01}, "lr"),
            ({"lr": 0.01, "betas": (0.8, 0.99)}, "betas"),
            ({"lr": 0.01, "eps": 1e-3}, "eps"),
            ({"lr": 0.01, "weight_decay": 0.1}, "weight_decay"),
            ({"lr": 0.01, "warmup_steps": 5}, "warmup_steps"),
            ({"lr": 0.01, "r": 1.0}, "r: polynomial weighting"),
            ({"lr": 0.01, "weight_lr_power": 0.0}, "weight_lr_power 0"),
            ({"lr": 0.0}, "lr of 0: c = 0"),
            ({"lr": 0.01, "betas": (0.95, 0.98), "weight_decay": 0.05, "warmup_steps": 4, "r": 0.5,
              "weight_lr_power": 1.0, "eps": 1e-6}, "every argument at once"),
            ({"lr": 0.01, "foreach": False}, "foreach False (the per-parameter path)"),
        ]),
        # The reference checks no argument: only torch's own check (an empty list) remains.
        _error_inputs([], ValueError),
    )


def _soap():
    from pytorch_optimizer import SOAP

    return (
        SOAP,
        _inputs([
            ({}, "default (lr 3e-3, betas (0.95, 0.95), weight_decay 0.01; an eigenbasis by QR at step 11)"),
            ({"precondition_frequency": 3}, "precondition_frequency 3 (QR every third step)"),
            ({"shampoo_beta": 0.8, "betas": (0.9, 0.99)}, "shampoo_beta apart from beta2, and betas"),
            ({"weight_decay": 0.0, "lr": 0.01}, "no weight_decay"),
            ({"correct_bias": False}, "correct_bias False"),
            ({"normalize_gradient": True, "precondition_frequency": 4}, "normalize_gradient"),
            ({"precondition_1d": True, "precondition_frequency": 5}, "precondition_1d (a 7x7 eigenbasis for the vector)"),
            ({"max_precondition_dim": 6, "precondition_frequency": 3},
             "max_precondition_dim 6 (the 9-wide dimension keeps the identity)"),
            ({"merge_dims": True, "max_precondition_dim": 6, "precondition_frequency": 3},
             "merge_dims (5x9 stays, 2x3x2x2 merges to 6x4, the scalar to 1)"),
            ({"merge_dims": True, "max_precondition_dim": 6, "data_format": "channels_last",
              "precondition_frequency": 3}, "merge_dims with data_format channels_last (NHWC to NCHW first)"),
            ({"eps": 1e-3, "lr": 0.01}, "eps"),
            ({"maximize": True, "precondition_frequency": 3}, "maximize"),
            ({"lr": 0.02, "betas": (0.8, 0.9), "shampoo_beta": 0.7, "weight_decay": 0.05,
              "precondition_frequency": 2, "max_precondition_dim": 6, "merge_dims": True,
              "precondition_1d": True, "correct_bias": False, "normalize_gradient": True,
              "data_format": "channels_last", "eps": 1e-6, "maximize": True}, "every argument at once"),
        ]),
        _error_inputs(_pto_errors() + [
            ({"shampoo_beta": -0.1}, "negative shampoo_beta", None),
            ({"precondition_frequency": 0}, "precondition_frequency of 0", None),
            ({"max_precondition_dim": 0}, "max_precondition_dim of 0", None),
        ], ValueError),
    )


OPTIMIZERS = {
    "sgd": (torch.optim.SGD, co.optim_inputs_func_sgd, co.optim_error_inputs_func_sgd),
    "adam": (torch.optim.Adam, co.optim_inputs_func_adam, co.optim_error_inputs_func_adam),
    "adamax": (torch.optim.Adamax, co.optim_inputs_func_adamax, co.optim_error_inputs_func_adamax),
    "adadelta": (torch.optim.Adadelta, co.optim_inputs_func_adadelta, co.optim_error_inputs_func_adadelta),
    "adagrad": (torch.optim.Adagrad, co.optim_inputs_func_adagrad, co.optim_error_inputs_func_adagrad),
    "rmsprop": (torch.optim.RMSprop, co.optim_inputs_func_rmsprop, co.optim_error_inputs_func_rmsprop),
    "asgd": (torch.optim.ASGD, co.optim_inputs_func_asgd, co.optim_error_inputs_func_asgd),
    "adamw": (torch.optim.AdamW, co.optim_inputs_func_adamw, co.optim_error_inputs_func_adamw),
    "nadam": (torch.optim.NAdam, co.optim_inputs_func_nadam, co.optim_error_inputs_func_nadam),
    "radam": (torch.optim.RAdam, co.optim_inputs_func_radam, co.optim_error_inputs_func_radam),
    "sparseadam": (torch.optim.SparseAdam, co.optim_inputs_func_sparseadam,
                   co.optim_error_inputs_func_sparseadam),
    "rprop": (torch.optim.Rprop, co.optim_inputs_func_rprop, co.optim_error_inputs_func_rprop),
    "adafactor": (torch.optim.Adafactor, co.optim_inputs_func_adafactor, co.optim_error_inputs_func_adafactor),
    "muon": (torch.optim.Muon, co.optim_inputs_func_muon, co.optim_error_inputs_func_muon),
}
# Loaded only when asked for (`generate.py lion`), so that torch's fixtures
# regenerate without the other packages.
REFERENCES = {"lion": _lion, "adopt": _adopt, "ademamix": _ademamix,
              "sgdschedulefree": _sgd_schedulefree, "adamwschedulefree": _adamw_schedulefree,
              "lars": _lars, "lamb": _lamb, "adan": _adan, "prodigy": _prodigy,
              "soap": _soap}


def num(x: float):
    """A float as JSON: exact double, or a string for non-finite values."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def tensor_json(t: torch.Tensor) -> dict:
    t = t.detach()
    if t.is_sparse:
        t = t.to_dense()  # SGD's momentum buffer under sparse gradients; ferroptim keeps it dense
    name = str(t.dtype).removeprefix("torch.")  # float32, float64, bfloat16, float16
    return {
        "dtype": name,
        "shape": list(t.shape),
        "data": [num(v) for v in t.reshape(-1).tolist()],
    }


def value_json(v, dtype=torch.float32):
    """`v` as JSON. An empty list inside a list (SOAP's `[]` for a dimension
    it does not precondition, in `GG` and `Q`) is written as an empty tensor
    of `dtype`: ferroptim's state holds lists of tensors, and the reference
    tests `len(m) == 0`, which holds for both."""
    if isinstance(v, torch.Tensor):
        return tensor_json(v)
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return num(v)
    if isinstance(v, (list, tuple)):
        return [tensor_json(torch.empty(0, dtype=dtype)) if isinstance(x, list) and not x
                else value_json(x, dtype) for x in v]
    if isinstance(v, dict):
        return {k: value_json(x, dtype) for k, x in v.items()}
    raise TypeError(f"cannot write {type(v)} to a fixture")


def state_dict_json(sd: dict, dtype=torch.float32) -> dict:
    return {
        "state": {str(k): {kk: value_json(vv, dtype) for kk, vv in v.items()} for k, v in sd["state"].items()},
        "param_groups": [{k: value_json(v) for k, v in g.items()} for g in sd["param_groups"]],
    }


def has_tensor(obj) -> bool:
    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, dict):
        return any(has_tensor(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(has_tensor(v) for v in obj)
    return False


def sparse_grad(shape, step: int, gen: torch.Generator, dtype: torch.dtype):
    """An uncoalesced embedding-style gradient: random rows, unsorted, repeated."""
    nnz = 24 if step % 5 == 4 else int(torch.randint(0, 8, (), generator=gen))
    indices = torch.randint(0, shape[0], (nnz,), generator=gen)
    values = torch.randn((nnz, *shape[1:]), generator=gen, dtype=dtype)
    grad = torch.sparse_coo_tensor(indices.unsqueeze(0), values, shape, check_invariants=True)
    return grad, {"indices": indices.tolist(), "values": tensor_json(values)}


def group1_lr_scale(name: str, kwargs: dict) -> float:
    """The second group's lr, as a multiple of the first's."""
    return GROUP1_LR_SCALE_FOR.get(name, lambda _: GROUP1_LR_SCALE)(kwargs)


def run_case(cls, kwargs: dict, dtype: torch.dtype, seed: int, sparse: bool = False,
             shapes: list | None = None, on_mid=None, lr_scale: float = GROUP1_LR_SCALE,
             no_grad: set = NO_GRAD) -> dict:
    gen = torch.Generator().manual_seed(seed)
    shapes = SPARSE_SHAPES if sparse else shapes or SHAPES
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]
    initial = [tensor_json(p) for p in params]
    base_lr = kwargs.get("lr", inspect.signature(cls).parameters["lr"].default)
    group_specs = [
        {"params": [params[i] for i in GROUPS[0]]},
        {"params": [params[i] for i in GROUPS[1]], "lr": base_lr * lr_scale},
    ]
    opt = cls(group_specs, **kwargs)
    # Schedule-Free's parameters differ between training and evaluation:
    # its steps need train(), and the run ends with eval() (recorded below).
    modes = callable(getattr(opt, "train", None)) and callable(getattr(opt, "eval", None))
    if modes:
        opt.train()
    steps = []
    sd_mid = None
    for step in range(STEPS):
        grads = []
        for i, p in enumerate(params):
            if sparse:
                g, record = sparse_grad(p.shape, step, gen, dtype)
            else:
                g = torch.randn(p.shape, generator=gen, dtype=dtype)
                record = tensor_json(g)
            if (step, i) in no_grad:
                p.grad = None
                grads.append(None)
            else:
                p.grad = g.clone()
                grads.append(record)
        opt.step()
        index = {id(p): i for i, p in enumerate(params)}
        state = {
            str(index[id(p)]): {k: value_json(v, dtype) for k, v in s.items()} for p, s in opt.state.items()
        }
        steps.append({"grads": grads, "params": [tensor_json(p) for p in params], "state": state})
        if step + 1 == MID_STEP:
            sd_mid = state_dict_json(opt.state_dict(), dtype)
            if on_mid is not None:
                on_mid(opt)
    out = {
        "groups": [
            {"params": GROUPS[0]},
            {"params": GROUPS[1], "lr": base_lr * lr_scale},
        ],
        "initial_params": initial,
        "steps": steps,
        "state_dict_mid": sd_mid,
        "mid_step": MID_STEP,
        "state_dict_final": state_dict_json(opt.state_dict(), dtype),
    }
    if modes:
        opt.eval()
        out["eval"] = {"params": [tensor_json(p) for p in params], "state_dict": state_dict_json(opt.state_dict())}
    return out


def describe_params(params, sample) -> str | None:
    """How an error input passes its parameters, in words the Rust tests know."""
    if params is None:
        return "single"
    if isinstance(params, torch.Tensor):
        return None  # a bare tensor: not an iterable
    if isinstance(params, set):
        return None
    if isinstance(params, list) and any(isinstance(p, torch.Tensor) and (p.is_sparse or p.is_complex())
                                        for p in params):
        return None  # sparse or complex parameters: ferroptim's Params are dense and real
    if isinstance(params, list) and any(isinstance(g, dict) and any(
            isinstance(p, torch.Tensor) and (p.is_sparse or p.is_complex()) for p in g["params"])
            for g in params):
        return None
    if isinstance(params, list) and all(isinstance(p, torch.Tensor) for p in params):
        if len(params) == 0:
            return "empty"
        if len({id(p) for p in params}) < len(params):
            return "duplicate_in_group"
        if any(p.dim() == 3 for p in params):
            return "single_3d"  # Muon takes matrices only
        return "single"
    if isinstance(params, list) and all(isinstance(g, dict) for g in params):
        if any(isinstance(x, tuple) for g in params for x in (g["params"] if isinstance(g["params"], list) else [])):
            return None
        return "duplicate_across_groups"
    return None


def error_cases(name: str, cls, error_func) -> tuple[list, list]:
    errors, skipped = [], []
    inputs = []
    for e in error_func("cpu", torch.float32):
        inputs.append((e.optimizer_error_input.params, e.optimizer_error_input.kwargs,
                       e.optimizer_error_input.desc, e.error_type.__name__, e.error_regex))
    sample = torch.nn.Parameter(torch.randn(1, 1))
    for kwargs, desc in EXTRA_ERRORS.get(name, []):
        inputs.append((None, kwargs, desc, "ValueError", None))
    inputs.append(([], {}, "extra: empty parameter list", "ValueError", None))
    for params, kwargs, desc, error_type, regex in inputs:
        kind = describe_params(params, sample)
        if kind is None:
            skipped.append({"desc": desc, "reason": "the parameters are a bare tensor, a set, named "
                            "tuples, or sparse or complex tensors: ferroptim takes an ordered collection of "
                            "dense real Params (checked by the type system) and has no named parameters yet"})
            continue
        if has_tensor(kwargs):
            skipped.append({"desc": desc, "reason": "tensor-valued hyperparameters (lr/betas) are not "
                            "supported: ferroptim's hyperparameters are f64"})
            continue
        real_params = params if params is not None else [sample]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                cls(real_params, **kwargs)
            except Exception as exc:  # noqa: BLE001 (pytorch-optimizer raises its own classes)
                message = str(exc)
            else:
                raise RuntimeError(f"{name}: torch accepted the error input {desc!r}")
        errors.append({
            "desc": desc,
            "params": kind,
            "kwargs": value_json(kwargs),
            "error_type": error_type,
            "error_regex": regex if regex is not None else None,
            "torch_message": message,
        })
    return errors, skipped


def generate(name: str) -> dict:
    cls, inputs_func, error_func = OPTIMIZERS[name] if name in OPTIMIZERS else REFERENCES[name]()
    cases, skipped = [], []
    configs = [(i.kwargs, i.desc) for i in inputs_func("cpu", torch.float32)]
    configs += EXTRA_INPUTS.get(name, [])
    seed = 0
    for kwargs, desc in configs:
        if has_tensor(kwargs):
            skipped.append({"desc": desc, "reason": "tensor-valued lr/betas are not supported"})
            continue
        runs = [] if name in SPARSE_ONLY else [False]
        if name in SPARSE_CONFIGS and SPARSE_CONFIGS[name](kwargs):
            runs.append(True)
        for sparse in runs:
            for dtype in DTYPES:
                seed += 1
                case = {"desc": ("sparse grads: " if sparse else "") + desc,
                        "dtype": str(dtype).removeprefix("torch."), "kwargs": value_json(kwargs)}
                case.update(run_case(cls, dict(kwargs), dtype, seed, sparse, SHAPES_FOR.get(name),
                                     lr_scale=group1_lr_scale(name, kwargs)))
                cases.append(case)
    if name in SPARSE_APPENDED:
        for kwargs, desc in configs:
            if has_tensor(kwargs) or not SPARSE_APPENDED[name](kwargs):
                continue
            for dtype in DTYPES:
                seed += 1
                case = {"desc": "sparse grads: " + desc,
                        "dtype": str(dtype).removeprefix("torch."), "kwargs": value_json(kwargs)}
                case.update(run_case(cls, dict(kwargs), dtype, seed, True, SHAPES_FOR.get(name)))
                cases.append(case)
    errors, err_skipped = error_cases(name, cls, error_func)
    return {
        "generator": "tools/torch_reference/generate.py",
        "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "optimizer": name,
        "reference": reference_of(cls),
        "cases": cases,
        "errors": errors,
        "skipped": skipped + err_skipped,
    }


def reference_of(cls) -> str:
    """The package (and version) whose class produced the numbers."""
    from importlib.metadata import version

    package = cls.__module__.split(".")[0]
    return f"torch {torch.__version__}" if package == "torch" else f"{package.replace('_', '-')} {version(package.replace('_', '-'))}"


def generate_lbfgs() -> dict:
    import lbfgs  # beside this file

    errors, skipped = error_cases("lbfgs", torch.optim.LBFGS, co.optim_error_inputs_func_lbfgs)
    data = lbfgs.generate({"tensor_json": tensor_json, "value_json": value_json},
                          co.optim_inputs_func_lbfgs, error_cases)
    return {
        "generator": "tools/torch_reference/generate.py (lbfgs.py)",
        "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "optimizer": "lbfgs",
        "problems": data["problems"],
        "cases": data["cases"],
        "errors": errors,
        "skipped": data["skipped"] + skipped,
    }


def lookahead_helpers() -> dict:
    """What lookahead.py takes from this file (it runs the cases as these do)."""
    return {"tensor_json": tensor_json, "value_json": value_json, "state_dict_json": state_dict_json,
            "SHAPES": SHAPES, "GROUPS": GROUPS, "GROUP1_LR_SCALE": GROUP1_LR_SCALE, "NO_GRAD": NO_GRAD,
            "STEPS": STEPS, "MID_STEP": MID_STEP, "DTYPES": DTYPES}


def generate_lookahead() -> dict:
    import lookahead  # beside this file
    from importlib.metadata import version

    helpers = lookahead_helpers()
    return {
        "generator": "tools/torch_reference/generate.py (lookahead.py)",
        "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "optimizer": "lookahead",
        "reference": f"pytorch-optimizer {version('pytorch-optimizer')}",
        **lookahead.generate(helpers),
    }


def generate_clip() -> dict:
    import clip  # beside this file

    return {
        "generator": "tools/torch_reference/generate.py (clip.py)",
        "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "optimizer": "clip",
        **clip.generate(tensor_json, num),
    }


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    names = argv[1:] or list(OPTIMIZERS) + list(REFERENCES) + ["lbfgs", "clip", "lookahead"]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in names:
        special = {"lbfgs": generate_lbfgs, "clip": generate_clip, "lookahead": generate_lookahead}
        data = special[name]() if name in special else generate(name)
        path = OUT_DIR / f"{name}.json"
        path.write_text(json.dumps(data, separators=(",", ":")) + "\n")
        print(f"{path.relative_to(ROOT)}: {len(data['cases'])} cases, {len(data.get('errors', []))} error inputs, "
              f"{len(data.get('skipped', []))} skipped, {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main(sys.argv)
