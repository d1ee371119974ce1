"""The research scripts under bench/experiments/ stay runnable as the code they measure changes:
each imports as a module, and one finds the repository's files from any working directory."""

import importlib
import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT, SHIPPED_CORPUS

SCRIPTS = sorted(p.stem for p in (ROOT / "bench" / "experiments").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_research_script_imports(name):
    importlib.import_module(f"bench.experiments.{name}")


def test_a_research_script_reads_the_repository_from_another_working_directory(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench.experiments.parse_speed", "--articles", "3", "--repeat", "1"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["corpora"]["shipped"]["files"] == len(list(SHIPPED_CORPUS.glob("*.txt")))
