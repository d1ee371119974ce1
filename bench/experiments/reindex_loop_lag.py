"""How long the bot's event loop stalls while a /reindex runs (real model, the shipped corpus).

A probe task sleeps 5 ms again and again on the bot's event loop and records how late each wake-up
is; the index job runs meanwhile exactly as /reindex starts it (`Serving.start_reindex`), on a copy
of the shipped corpus with one article changed, so the run loads the bulk model and embeds. Every
lateness is a moment when no Discord event, heartbeat or answer could be handled. Prints one JSON
document: the lateness percentiles and maximum (ms) during the run, the same on an idle loop for
comparison, and the run's wall time, and how much the bot process's RSS grew over the run (a
model loaded in-process stays allocated; a child process returns it). Each run is a fresh process
that has not imported torch, as a bot that answers with the ONNX query model has not.

    python -m bench.experiments.reindex_loop_lag [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bot.serving import Serving
from embeddings.config import Settings

from .common import ROOT

TICK = 0.005


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def probe(stop: asyncio.Event, lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(TICK)
        lags.append((loop.time() - start - TICK) * 1000)


def summary(lags: list[float]) -> dict:
    ordered = sorted(lags)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)  # noqa: E731
    return {
        "wakeups": len(lags),
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
        "max_ms": round(ordered[-1], 1),
        "over_50ms": sum(x > 50 for x in lags),
        "over_100ms": sum(x > 100 for x in lags),
    }


async def one_run(settings: Settings, run: int) -> dict:
    path = sorted(settings.corpus_dir.iterdir())[run % 5]
    path.write_text(path.read_text() + f"\n\nA paragraph added for run {run} of the loop-lag benchmark.\n")
    serving = Serving(settings)
    await serving.start()
    stop, idle = asyncio.Event(), []
    task = asyncio.create_task(probe(stop, idle))
    await asyncio.sleep(2.0)
    stop.set()
    await task
    stop, busy = asyncio.Event(), []
    rss = rss_mb()
    task = asyncio.create_task(probe(stop, busy))
    started = time.monotonic()
    job = serving.start_reindex(started_by="bench")
    await job.done.wait()
    seconds = time.monotonic() - started
    stop.set()
    await task
    grown = rss_mb() - rss
    serving.close()
    assert job.report is not None, job.error
    return {
        "run_seconds": round(seconds, 2),
        "rss_growth_mb": round(grown, 1),
        "during_reindex": summary(busy),
        "idle": summary(idle),
    }


def settings_for(work: Path) -> Settings:
    return replace(Settings.from_env({}), corpus_dir=work / "corpus", index_path=work / "index.sqlite3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # one run, in this process
    parser.add_argument("--run", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(asyncio.run(one_run(settings_for(args.measure), args.run))))
        return
    work = Path(tempfile.mkdtemp(prefix="loop-lag-"))
    try:
        shutil.copytree(ROOT / "corpus", work / "corpus")
        settings = settings_for(work)
        env = {**os.environ, "CORPUS_DIR": str(settings.corpus_dir), "INDEX_PATH": str(settings.index_path)}
        subprocess.run([sys.executable, "-m", "embeddings"], env=env, cwd=ROOT, check=True, capture_output=True)
        results = []
        for n in range(args.runs):
            out = subprocess.run(
                [sys.executable, "-m", __spec__.name, "--measure", str(work), "--run", str(n)],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps({"python": sys.version.split()[0], "runs": results}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
