"""The README stays true: its set-up commands, CLI commands and settings exist."""

from __future__ import annotations

import re
from pathlib import Path

from typer.main import get_command

from assistant.cli import app
from assistant.config import Settings

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_exactly_two_setup_commands_and_ci_runs_the_test_one():
    block = README.split("## Set-up: two commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["bash scripts/start.sh", "bash scripts/test.sh"]
    assert (REPO / "scripts" / "start.sh").is_file() and (REPO / "scripts" / "test.sh").is_file()
    assert "bash scripts/test.sh" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_every_setting_is_documented():
    for name in Settings.model_fields:
        assert f"ASSISTANT_{name.upper()}" in README, name


def test_documented_commands_exist():
    root = get_command(app)
    documented = set(re.findall(r"`policy-assistant ([a-z]+(?: [a-z]+)?)", README))
    assert documented, "no commands found in the README"
    for command in documented:
        words = command.split()
        group = root.commands.get(words[0])
        assert group is not None, f"README documents unknown command {command!r}"
        subcommands = getattr(group, "commands", None)
        if subcommands is not None and len(words) > 1:
            assert words[1] in subcommands, f"README documents unknown command {command!r}"
    listed = set(root.commands)
    assert listed <= {c.split()[0] for c in documented}, f"undocumented commands: {listed - documented}"
