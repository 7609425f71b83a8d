"""Runs in the sweep driver: the sweep file, its plan of trials, the run that owns them (lock, resume, Ray Tune),
checkpoint pruning and the live view.
"""
