"""Runs in the sweep driver: the dataset registry, readers of each official on-disk format, corrupted test sets.

Read once per sweep and shipped to every trial as uint8 arrays (fixray.crossing.images), never read by a trial itself.
"""
