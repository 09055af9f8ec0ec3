"""vlp: config-driven vision-language pretraining and finetuning."""

__version__ = "0.1.0"
