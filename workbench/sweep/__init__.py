"""Sweeps: spec (YAML -> resolved run configs, pure), launch (submitit), status (run dirs + Slurm)."""
