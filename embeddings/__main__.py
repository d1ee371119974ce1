"""`python -m embeddings [--rebuild] ...` runs the index job (same as `corpus-bot index`)."""

from .cli import index_main

index_main()
