"""moirai-ft: fast, reproducible fine-tuning sweeps for Salesforce Moirai (uni2ts)."""

from moirai_ft import imports as _imports

_imports.install()  # before any module of the package loads Lightning: no transformers without LoRA (imports.py)

__version__ = "0.1.0"
