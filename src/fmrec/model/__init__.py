"""The factorization machine estimator and its persistence."""

from fmrec.model.fm import FactorizationMachine
from fmrec.model.io import load_model, save_model

__all__ = ["FactorizationMachine", "load_model", "save_model"]
