"""Compute-optimal allocation: question difficulty (oracle and predicted), the calibrated policy
file, the global-budget allocator, and deadline (wall-clock) budgets.

Modules are imported on use (``ponder.allocation.difficulty``, ``.policy``, ``.calibrate``,
``.global_budget``, ``.deadline``): the ``compute_optimal`` strategy builds on them, and they on
the strategies.
"""
