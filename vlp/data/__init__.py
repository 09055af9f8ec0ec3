"""Data: the synthetic benchmark, converters to webdataset shards, and the training pipeline."""
