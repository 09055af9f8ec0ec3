"""Official metric semantics, importable without a model."""

from vlp.metrics.retrieval import retrieval_recall

__all__ = ["retrieval_recall"]
