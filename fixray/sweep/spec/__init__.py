"""The sweep file, in three steps, one module each: reading.py (limits, YAML as data, `extends`), schema.py (the typed
SweepSpec, made from the trial contract) and checks.py (every problem at once); values.py answers what values a
setting takes in a sweep."""
