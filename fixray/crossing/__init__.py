"""Runs on both sides of the crossing between the sweep driver and a trial: what the driver sends a trial and both
read. The trial contract (every setting, declared once), each head kind's rules, the metric catalogue and the image
arrays. It imports no torch and no other room (tests/test_layout.py), so the driver and `fixray report` read it
without loading a trial's modules.
"""
