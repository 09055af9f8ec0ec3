"""Importing published checkpoints into vlp (``vlp-convert``): HF ViLT and CLIP folders -> state dicts with
vlp's parameter names, which ``model.init_from`` loads."""
