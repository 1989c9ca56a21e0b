"""`model.fit` callbacks: LSUV at train begin, and the training monitors.

Each engineer adds their own import line and `__all__` entry here (keep sorted).
"""

__all__ = []
