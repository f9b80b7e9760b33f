"""The store stage: the DuckDB file of runs, metrics, fits and plans (database), and runs logged elsewhere
(importers)."""
