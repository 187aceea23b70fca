"""Evaluation: metrics, runs, plots."""
