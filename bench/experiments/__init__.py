"""Research scripts: each measures a family of methods and prints the figures docs/retrieval.md
records. Run from the repository root as `python -m bench.experiments.<name>`."""
