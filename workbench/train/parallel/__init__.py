"""Parallelism for the trainer: process groups and DDP/FSDP2 (distributed), TP x PP x DP layouts (parallelize), and
layout-independent initialisation (weights_init)."""
