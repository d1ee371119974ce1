"""The Discord layer: translates between Discord interactions and the core in `embeddings`."""
