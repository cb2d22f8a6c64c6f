"""Sub-commands of the `aggregator` CLI, one module each (see aggregator/cli.py)."""
