"""The core must stay usable without Discord: nothing in embeddings/ may import discord."""
import subprocess
import sys

from tests.conftest import ROOT


def test_importing_the_whole_core_and_cli_does_not_import_discord():
    modules = [p.stem for p in (ROOT / "embeddings").glob("*.py") if p.stem not in ("__init__", "__main__")]
    code = "import sys\n" + "".join(f"import embeddings.{m}\n" for m in modules) + "import bot.cli\n"
    code += "print('discord' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
