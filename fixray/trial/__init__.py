"""Runs inside a trial process, on a GPU node: the loop, heads, backbones, augmentation, measurements, figures, and
the function Ray runs; the contract a trial receives is crossing/'s.

Nothing here imports the driver's rooms (sweep/, records/, data/) nor mlflow, pydantic or yaml: a trial gets its
settled config and its images from the driver, once, and reports metric dicts back (tests/test_layout.py).
"""
