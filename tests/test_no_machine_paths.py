"""Committed files name no machine paths (the guide: report commands with repo-relative paths; run folders
as ``<runs>``, the dataset root as ``../shared/datasets``)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# absolute paths of the machines the project runs on; a path inside an extracted archive ("$tmp"/root/usr) is not one
MACHINE = re.compile(r"(?<![\w$/])(?<!\w\")(/work/|/root/|/home/\w+/)")


def tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = [REPO / f for f in out.splitlines() if not f.startswith("tests/")]
    return [f for f in files if f.is_file() and f.suffix in {".md", ".json", ".py", ".sh", ".yaml", ".yml", ".toml",
                                                             ".txt", ".cfg"}]


def test_committed_files_name_no_machine_paths():
    found = [f"{f.relative_to(REPO)}:{i}" for f in tracked_text_files()
             for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1) if MACHINE.search(line)]
    assert not found, f"machine paths in committed files: {found[:10]}"
