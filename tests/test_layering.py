"""The core must stay usable without Discord: nothing in embeddings/ may import discord."""

import subprocess
import sys

from tests.helpers import ROOT


def test_importing_the_whole_core_and_cli_does_not_import_discord():
    core = ROOT / "embeddings"
    modules = [".".join(p.relative_to(core).with_suffix("").parts) for p in core.rglob("*.py") if p.stem != "__main__"]
    assert "search.search_index" in modules  # the packages' modules too
    code = (
        "import sys\n"
        + "".join(f"import embeddings.{m}\n".replace(".__init__", "") for m in modules)
        + "import bot.cli\n"
    )
    code += "print('discord' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_bot_takes_its_errors_from_the_core_not_from_the_cli():
    """Only the console script (bot/cli.py) builds on the CLI; the bot's modules share the core's
    error hierarchy (embeddings.errors) instead of importing the CLI's."""
    import ast

    offenders = []
    for path in (ROOT / "bot").rglob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else ([a.name for a in node.names] if isinstance(node, ast.Import) else [])
            )
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.startswith("embeddings.cli")]
    assert not offenders
