"""moirai-ft: fast, reproducible fine-tuning sweeps for Salesforce Moirai (uni2ts)."""

from typing import Any

from moirai_ft import imports as _imports

_imports.install()  # before any module of the package loads Lightning: no transformers without LoRA (imports.py)

__version__ = "0.1.0"

__all__ = ["Forecaster"]


def __getattr__(name: str) -> Any:
    # `from moirai_ft import Forecaster` loads torch and uni2ts; the torch-free modules (analyze.py's,
    # the config checks) import this package too, so the import waits until Forecaster is asked for
    if name == "Forecaster":
        from moirai_ft.forecast.forecaster import Forecaster

        return Forecaster
    raise AttributeError(f"module 'moirai_ft' has no attribute {name!r}")
