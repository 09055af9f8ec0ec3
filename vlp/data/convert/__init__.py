"""Converters from official dataset files to vlp shards (one module per source format)."""
