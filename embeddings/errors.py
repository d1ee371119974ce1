"""Every failure whose message is written for the user, in one hierarchy.

The CLI shows a `CorpusBotError` as one `Error: ...` line and the bot as a private reply; anything
else is unexpected and keeps its traceback (in the log, for the bot). Messages say what is wrong,
where, and what to do.
"""

from __future__ import annotations


class CorpusBotError(Exception):
    """A refusal or failure the user can act on; its message is shown as is."""


class ConfigError(CorpusBotError, ValueError):
    """A setting has a value we cannot use; the message names the variable."""


class QueryError(CorpusBotError, ValueError):
    """A question or filter the search cannot take; the message says which and why."""


class IndexMissingError(CorpusBotError):
    """There is no usable index yet; the message tells the user how to build one."""


class ModelMismatchError(CorpusBotError):
    """The index was built with another embedding model (or dimension) than the one configured."""


class ModelLoadError(CorpusBotError):
    """The configured embedding model cannot be loaded; the message says which and why."""


class IndexDamagedError(CorpusBotError):
    """The index file is damaged beyond what a run repairs; the message says to move it away."""


class SchemaTooNewError(CorpusBotError):
    """The index was written by a newer corpus-bot."""


class IndexOutdatedError(IndexMissingError):
    """The index was written by an older corpus-bot; reading never upgrades it (`corpus-bot index`
    or the bot at start does)."""


class NotAnIndexError(CorpusBotError):
    """The index path holds a file that is not a corpus-bot index (another program's database);
    it is refused for reading and writing and left unchanged."""


class EvalDataError(CorpusBotError, ValueError):
    """The evaluation folder is not usable; the message names the file and line."""


class IndexJobError(CorpusBotError):
    """The index job refused to run or could not finish; the previous index is unchanged."""


class IndexBusyError(IndexJobError):
    """Another index run holds the lock."""


class IndexRefusedError(IndexJobError):
    """The run would harm the index (empty it, a missing corpus folder)."""


class RemovalsRefusedError(IndexRefusedError):
    """The run would remove more than half of the indexed articles (and more than a few): most often
    CORPUS_DIR points at the wrong folder. Nothing was written. `confirm` says how to go ahead
    anyway, in the words of the program that ran it (the CLI's flag, the bot's command option)."""

    def __init__(
        self, removing: int, indexed: int, corpus: str, found: int, confirm: str = "run again with --allow-removals"
    ):
        self.removing, self.indexed, self.corpus, self.found, self.confirm = removing, indexed, corpus, found, confirm
        super().__init__(
            f"this run would remove {removing} of the {indexed} indexed articles ({corpus} has {found}: "
            f"is CORPUS_DIR the right folder?); nothing was written. If they should go, {confirm}"
        )

    def __reduce__(self):  # pickled with its fields (the bot's index process sends it to the bot)
        return type(self), (self.removing, self.indexed, self.corpus, self.found, self.confirm)


class IndexWriteError(IndexJobError):
    """The index file (or its folder) cannot be written: disk full, file size limit, read-only."""
