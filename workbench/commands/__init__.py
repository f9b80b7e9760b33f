"""One module per command group. Each keeps its heavy imports inside its commands."""
