"""moirai-ft: fast, reproducible fine-tuning sweeps for Salesforce Moirai (uni2ts)."""

__version__ = "0.1.0"
