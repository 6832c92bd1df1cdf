"""The documentation stays true: the site builds with --strict (no broken link or anchor, no
docstring griffe cannot read), every public name has a docstring, and every Python example in the
README and the docs runs as written."""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
import sys

import pytest

from .conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _python_blocks(page) -> list[str]:
    return re.findall(r"```python\n(.*?)\n```", page.read_text(), re.S)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the site is built on Python 3.11+: mkdocstrings needs "
                    "pymdown-extensions 13, which needs Python 3.11 (on 3.10 pip pairs it with 12.3, which it breaks)")
def test_the_site_builds_strictly(tmp_path):
    mkdocs = shutil.which("mkdocs", path=os.path.dirname(sys.executable)) or shutil.which("mkdocs")
    if mkdocs is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must build the docs: the test extra installs the docs extra")
        pytest.skip("MkDocs is not installed (pip install -e '.[docs]')")
    result = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    for name in ("xaicli.Explainer", "xaicli.run", "xaicli.keras.ExplainCallback", "xaicli.methods.Option"):
        assert f'id="{name}"' in reference, name


def _public(module):
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            yield f"{module.__name__}.{name}", value
            if inspect.isclass(value):
                for member, attribute in vars(value).items():
                    if not member.startswith("_") and (inspect.isfunction(attribute) or isinstance(attribute, property)):
                        yield f"{module.__name__}.{name}.{member}", attribute


def test_every_public_name_has_a_docstring():
    import xaicli
    import xaicli.methods

    keras_module = pytest.importorskip("xaicli.keras")
    undocumented = [name for module in (xaicli, xaicli.methods, keras_module) for name, value in _public(module)
                    if not (inspect.getdoc(value) or "").strip()]
    assert not undocumented


@pytest.mark.parametrize("page", [p for p in PAGES if _python_blocks(p)], ids=lambda p: p.name)
def test_the_python_examples_run(page, tmp_path):
    """A page's Python blocks run in order, each in a fresh namespace, in one process, from a
    folder holding the sample images: they write there, never into the repository."""
    (tmp_path / "sample_images").symlink_to(REPO / "sample_images")
    runner = ("import sys\n"
              "for number, block in enumerate(sys.argv[1:], 1):\n"
              "    exec(compile(block, f'block {number}', 'exec'), {'__name__': '__main__'})\n")
    result = subprocess.run([sys.executable, "-c", runner, *_python_blocks(page)], cwd=tmp_path,
                            capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
