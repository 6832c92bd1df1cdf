"""The README's quick start stays true: CI runs its test command, and its run command names real files."""

import re
import shlex

from .conftest import REPO


def _shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", (REPO / "README.md").read_text(), re.S)


def test_ci_runs_exactly_the_readme_test_command():
    readme_test_command = _shell_blocks()[1]
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert readme_test_command in ci_lines


def test_quick_start_run_command_names_files_that_exist():
    words = shlex.split(_shell_blocks()[0])
    assert "run" in words
    for word in words:
        if word.startswith("sample_images/"):
            assert (REPO / word).exists(), word

