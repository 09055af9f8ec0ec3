"""Objectives: one module per training signal, each owning its head, loss and metrics."""
