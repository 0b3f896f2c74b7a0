"""The pieces that make a fine-tuning step fast without changing Moirai's mathematics.

A Moirai step does little arithmetic (about 6 x parameters x 19 tokens a sample), so on a GPU its time
goes to launching kernels and to the host waiting for the GPU. What is here removes those waits:

- uni2ts's rotary projection checks its cache length against `time_id.max()` on every attention call,
  and its std scaler zeroes padding with boolean-mask assignment (a `nonzero`); two subclasses compute
  the same values with no read-back, and `use_fast_path` swaps them in place (with a third that keeps
  the distribution head in fp32 under bf16 autocast). They, and the copy of MoiraiModule's forward pass
  that `compile_forward` compiles, live in model/compat.py with the other uni2ts internals;
- torch.distributions validates every argument and sample with `if not valid.all()`: off during the
  step, scoped (`distribution_validation`), since the model's outputs are valid by construction;
- AdamW's fused kernel updates all parameters at once and keeps its step counters on the device
  (`adamw_options`);
- optional torch.compile of the model's tensor part (`compile_forward`), for fused kernels and, in
  reduce-overhead mode, CUDA graphs (train batches all have one shape, so one graph serves the run).

Each piece is checked against uni2ts's own result in tests/model/test_precision.py and tests/model/test_host_sync.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property, partial

import torch
from torch import nn
from torch.distributions import Distribution
from uni2ts.model.moirai import MoiraiModule

from moirai_ft.config.schema import CompileMode
from moirai_ft.data.windows import Batch
# the uni2ts internals (the swapped-in subclasses, the copied forward pass): model/compat.py
from moirai_ft.model.compat import FAST_SUBCLASSES, distribution_inputs
from moirai_ft.values import plain


def use_fast_path(module: nn.Module) -> nn.Module:
    """Swap, in place, uni2ts submodules for the subclasses above: no host synchronisation, and the
    distribution head in fp32 under autocast. Same values in fp32.

    Only the class changes: parameters, buffers, state_dict and save_pretrained output stay as they are.
    Exact classes only, so a subclass with its own behaviour is left alone.
    """
    for sub in module.modules():
        replacement = FAST_SUBCLASSES.get(type(sub))
        if replacement is not None:
            sub.__class__ = replacement
    return module


@contextmanager
def distribution_validation(enabled: bool) -> Iterator[None]:
    """torch.distributions' default argument validation, set for the block and restored after."""
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(enabled)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)


def _torch_at_least(major: int, minor: int) -> bool:
    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    return version >= (major, minor)


def adamw_options(device: torch.device) -> dict[str, bool]:
    """AdamW's fused kernel where torch has one for the device (CUDA; CPU since torch 2.4), else foreach.

    Fused: one launch updates every parameter and the step counters live on the device; the default
    per-parameter path reads each counter with `.item()`.
    """
    if device.type == "cuda" or (device.type == "cpu" and _torch_at_least(2, 4)):
        return {"fused": True}
    return {"foreach": True}


_TORCH_MODE = {
    CompileMode.default: "default",
    CompileMode.reduce_overhead: "reduce-overhead",
    CompileMode.max_autotune: "max-autotune",
}


def _fill_cached_properties(module: nn.Module) -> None:
    """Compute every functools.cached_property of the submodules now: the first access writes to the
    instance, which breaks a graph (uni2ts's QueryKeyProjection.split_sizes is one)."""
    for sub in module.modules():
        for klass in type(sub).__mro__:
            for name, attr in vars(klass).items():
                if isinstance(attr, cached_property):
                    getattr(sub, name)


def compile_forward(
    module: MoiraiModule, mode: CompileMode | str, backend: str = "inductor"
) -> Callable[[Batch], Distribution] | None:
    """The module's forward with its tensor part compiled as one graph (None when mode is off).

    Static shapes: train batches all have one shape, so one graph, and with CUDA graphs one recording,
    serves the whole run. fullgraph: a graph break (a host sync crept in) is an error, not a slow step.
    The distribution and the loss stay eager. `backend="aot_eager"` (tests) captures without kernels.
    """
    mode = CompileMode(plain(mode))
    if mode == CompileMode.off:
        return None
    _fill_cached_properties(module)
    how = {"mode": _TORCH_MODE[mode]} if backend == "inductor" else {"backend": backend}
    compiled = torch.compile(partial(distribution_inputs, module), fullgraph=True, dynamic=False, **how)
    graphs = backend == "inductor" and mode != CompileMode.default

    def forward(batch: Batch) -> Distribution:
        if graphs:
            # a new training iteration: the last step's outputs are done with, replay over them
            torch.compiler.cudagraph_mark_step_begin()
        params, loc, scale = compiled(batch)
        return module.distr_output.distribution(params, loc=loc, scale=scale)

    return forward
