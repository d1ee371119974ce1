"""The Discord cogs: one per feature."""
