"""Benchmarks of decomposition quality: generated scenes with ground truth, the methods
people use today as baselines, the metrics, and the report (``lagsplit bench quality``)."""
