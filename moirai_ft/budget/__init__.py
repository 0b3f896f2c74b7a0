"""The user's budget (issue #24): `plan=true` estimates a run or a sweep before anything trains, from a short
calibration on the machine; `budget=<duration>` starts no job the plan says cannot finish in the wall clock
left. Torch-free modules: duration.py, clock.py, expand.py (train.py and the sweep's records use them before
torch loads); calibrate.py and plan.py measure and estimate."""
