"""The base install is the SDK and the client CLI: they must not need the server's or the engine's extras."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
HEAVY = (
    "torch",
    "diffusers",
    "transformers",
    "huggingface_hub",
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "uvicorn",
    "ray",
    "boto3",
    "av",
    "numpy",
    "PIL",
)


def test_the_base_dependencies_are_the_clients_only() -> None:
    base = {d.split(">")[0].split("=")[0].split("[")[0].lower() for d in PYPROJECT["project"]["dependencies"]}
    assert base == {"httpx", "pydantic", "pydantic-settings", "typer", "rich"}
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert any(d.startswith("torch==") for d in extras["engine"])
    assert any(d.startswith("fastapi") for d in extras["server"])


def test_the_sdk_and_the_cli_import_without_the_extras() -> None:
    probe = (
        "import sys, openreel, openreel.cli, openreel.sdk;"
        "openreel.cli.app(['--help'], standalone_mode=False);"
        f"print('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "loaded:", out.stdout


def test_the_server_imports_nothing_only_the_engine_extra_brings() -> None:
    """The API process stays light (its start, its memory): torch, the model libraries and PyAV load in
    the workers, which render."""
    engine_only = ("torch", "diffusers", "transformers", "accelerate", "peft", "av")
    probe = (
        "import sys, openreel.app;"
        f"print('loaded:' + ','.join(m for m in {engine_only!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "loaded:", out.stdout


def test_a_command_missing_its_extra_says_what_to_install_in_one_line(tmp_path: Path) -> None:
    probe = (
        "import sys; sys.modules['uvicorn'] = None;"  # as on a base install: `import uvicorn` fails
        f"sys.argv = ['openreel', 'serve', '--data-dir', {str(tmp_path)!r}];"
        "from openreel.cli import main; main()"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stdout.strip() == (
        "this command needs openreel[server] (uvicorn is not installed): "
        "pip install 'openreel[server,engine]'"
    )
    assert "Traceback" not in out.stderr
