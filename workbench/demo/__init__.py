"""The embedded default end to end (`workbench demo`): the run, its end-to-end checks and the
experiment's acceptance checks."""
