"""Forecasting with a finished job: which job (`job.py`, torch-free), what it is asked (`inputs.py`,
torch-free), the model and its forecast (`forecaster.py`: `Forecaster`), and predict.py's files
(`output.py`)."""
