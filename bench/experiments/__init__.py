"""Research scripts: each measures a family of methods, or what one part of the product costs, and
prints the figures the docs record (README.md here maps each to its table). Run from the
repository root as `python -m bench.experiments.<name>`."""
