"""Core: errors, safe file writes, units, config files (YAML with line numbers) and logging. Imports no other stage."""
