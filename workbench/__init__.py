"""workbench: scaling-law experiments and compute planning for LLM pretraining."""

__version__ = "0.1.0"
