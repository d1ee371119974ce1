"""Whatever escapes a command is answered. A Rust library's panic (pyo3's PanicException, raised
by tantivy on a damaged keyword copy) derives from BaseException, not Exception: discord.py let it
end the command's task ("Task exception was never retrieved") and the user saw "thinking…"
forever. The panic is injected where it happens, in the snapshot's search, by a test double."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from bot.serving import WorkerCrash, contained
from tests.bot.helpers import check_sent, started_bot
from tests.fake_discord import run

GENERIC = "Something went wrong; the error was logged. Please try again later."


class PanicException(BaseException):
    """Stands for pyo3_runtime.PanicException, which is a BaseException too."""


def panicking(*args, **kwargs):
    raise PanicException("called `Result::unwrap()` on an `Err` value: DataCorruption")


def unhandled(loop_errors: list) -> None:
    """Collect what asyncio reports as never retrieved (it does so when the task is collected)."""
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: loop_errors.append(context))


def test_a_panic_in_the_search_gets_the_generic_error_on_commands_and_buttons(fake_index, fake_embedder, caplog):
    async def main():
        loop_errors: list = []
        async with started_bot(fake_index, fake_embedder) as (bot, fake):
            unhandled(loop_errors)
            asker = fake.make_member()
            good = await fake.send_slash("ask", {"question": "Kunduz"}, member=asker)
            assert len((await good.wait_final(timeout=10)).embeds) == 5
            more = good.content_events[-1].data["components"][1]["components"][1]["custom_id"]

            bot.serving.index.search = panicking  # the snapshot's search panics, in the worker thread
            with caplog.at_level(logging.ERROR, logger="bot.app"):
                ask = await fake.send_slash("ask", {"question": "Kunduz"}, member=asker)
                ev = await ask.wait_final(timeout=10)
                assert ev.content == GENERIC and ev.ephemeral  # not "thinking…" forever
                click = await fake.click(good, more, member=asker)  # a button's search, the same
                ev = await click.wait_final(timeout=10)
                assert ev.content == GENERIC and ev.ephemeral
            check_sent(ask)
            check_sent(click)
            logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("unexpected error in")]
            assert len(logged) == 2 and all("PanicException: called `Result::unwrap()`" in m for m in logged)

            del bot.serving.index.search  # the workers survived: the next question is answered
            again = await fake.send_slash("ask", {"question": "Kunduz"}, member=fake.make_member())
            assert len((await again.wait_final(timeout=10)).embeds) == 5
            gc.collect()
            await asyncio.sleep(0)
            assert loop_errors == []

    run(main())


def test_a_panic_raised_in_the_command_itself_gets_the_generic_error(fake_index, fake_embedder, caplog):
    """Not through a worker thread: raised on the event loop, in the command's own code."""

    async def main():
        loop_errors: list = []
        async with started_bot(fake_index, fake_embedder) as (bot, fake):
            unhandled(loop_errors)

            async def search(*args, **kwargs):
                panicking()

            bot.serving.search = search
            with caplog.at_level(logging.ERROR, logger="bot.app"):
                rec = await fake.send_slash("ask", {"question": "Kunduz"})
                ev = await rec.wait_final(timeout=10)
            assert ev.content == GENERIC and ev.ephemeral
            assert [e.kind for e in rec.ok_events] == ["callback", "delete", "followup"]  # thinking… removed
            assert "PanicException" in caplog.text
            gc.collect()
            await asyncio.sleep(0)
            assert loop_errors == []

    run(main())


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_what_must_stop_the_bot_is_not_contained(stop):
    async def raising(exc):
        raise exc

    with pytest.raises(stop):
        asyncio.run(contained(raising(stop())))
    with pytest.raises(WorkerCrash) as crash:
        asyncio.run(contained(raising(PanicException("boom"))))
    assert isinstance(crash.value.__cause__, PanicException)
