"""The offline side and the store: parse articles, cut passages, embed, store in SQLite, search.

Nothing in this package imports discord: the bot and the CLI both sit on top of it.
"""
