"""Evaluators: metrics computed over a whole evaluation split (not per batch), e.g. retrieval."""
