"""workbench: scaling-law experiments and compute planning for LLM pretraining."""

from workbench.core import logs

__version__ = "0.1.0"

logs.install_default()  # progress lines on stderr in every process; the CLI replaces it (logs.setup)
