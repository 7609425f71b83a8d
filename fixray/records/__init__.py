"""Runs in the sweep driver and in `fixray report`: MLflow runs and the Tune-to-MLflow bridge, writes that wait out
an outage, and tables as values (a sweep's, the answer, the paper's) with their renderings. Imports no torch.
"""
