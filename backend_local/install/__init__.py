"""`python -m backend_local install ENGINE`: packages, pinned source, native extensions and weights for one
engine, idempotent (spec.py says what each engine needs; runner.py runs the steps)."""

from .spec import ENGINES, EngineSpec, Extension, Source, UrlFile, Weights

__all__ = ["ENGINES", "EngineSpec", "Extension", "Source", "UrlFile", "Weights"]
