"""Spending a sweep's budget where it pays (issue #13): selection on forecast quality (monitor.py),
pruning across the jobs of a sweep (prune.py), the lr range test (lr_find.py)."""
