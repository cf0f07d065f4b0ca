"""Scenarios: their schema, datasets, partitions and models, and the scenario files."""
