"""Scoring models on held-out data: metrics, plots, the evaluation report."""
