"""fixray: does a classification layer with fixed random class vectors beat a learned one?"""

__version__ = "0.2.0"
