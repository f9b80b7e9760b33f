"""The train stage: the one trainer, its config, schedule, run directory, lock, trackers, checkpoints and
parallelism."""
