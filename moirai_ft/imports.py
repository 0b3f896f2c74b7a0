"""What the package keeps out of a job's process: `transformers` (about 0.5 s of import and its memory),
which no job needs unless it uses LoRA (peft, imported by moirai_ft/model/lora.py only then).

Lightning imports torchmetrics whole, and torchmetrics's text and multimodal metrics (BERTScore,
InfoLM, CLIPScore) import transformers at module level when it is installed, behind version checks
(`_TRANSFORMERS_GREATER_EQUAL_4_4` ... in torchmetrics.utilities.imports, lightning_utilities
RequirementCache objects). `install()` (run by moirai_ft/__init__.py, so before any of the package's
modules loads Lightning) sets those checks to "not available" as torchmetrics defines them: torchmetrics
then skips the imports, and its transformers-based metrics, which moirai-ft never uses, raise
torchmetrics's own "install transformers" error if called. Nothing else changes: peft imports the real
transformers when a LoRA job loads it. Torch-free (analyze.py imports the package).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any, Sequence

TORCHMETRICS_CHECKS = "torchmetrics.utilities.imports"
SKIPPED_PREFIX = "_TRANSFORMERS"  # the RequirementCache objects torchmetrics gates its transformers imports on


def hide_transformers(checks: ModuleType) -> None:
    """Mark torchmetrics's transformers requirement checks as unmet (RequirementCache keeps its answer in
    `available` and computes it only while that is unset)."""
    for name, value in vars(checks).items():
        if name.startswith(SKIPPED_PREFIX) and hasattr(value, "requirement"):
            value.available = False
            value.message = f"moirai-ft left {value.requirement!r} out of this process (moirai_ft/imports.py)"


class _AfterTorchmetricsChecks(importlib.abc.MetaPathFinder):
    """Runs hide_transformers right after torchmetrics.utilities.imports executes, before the rest of
    torchmetrics reads its checks. Finds nothing itself: the normal finders locate the module."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> Any:
        if fullname != TORCHMETRICS_CHECKS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec  # an unusual install: import it unchanged
        execute = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            hide_transformers(module)

        loader.exec_module = exec_module
        return spec


def install() -> None:
    """Once per process, and only while torchmetrics is not loaded yet (a process that imported it earlier
    keeps it as it is)."""
    if TORCHMETRICS_CHECKS in sys.modules or any(isinstance(f, _AfterTorchmetricsChecks) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _AfterTorchmetricsChecks())
