"""The plan stage: law + compute budget -> N*, D*, shape, batch, LR, schedule, the cost of a parallel layout,
GPU time, and the flagship's config."""
