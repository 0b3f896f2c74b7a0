"""`hydra/sweeper=optuna`: an adaptive search over moirai-ft jobs on current Optuna (see sweeper.py)."""
