"""A method added from outside: a throwaway module of one method with one option, named under the
``xaicli.methods`` entry point group by a package that is only on PYTHONPATH. Nothing in xaicli is
touched, yet the method is listed, its option is a command-line option, a config key, a Python
keyword and a run.json entry, and --resume refuses a change of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

PLUGIN = textwrap.dedent('''
    """A throwaway method: saliency raised to a power."""
    import numpy as np

    from xaicli.methods import GradientContext, Option, method


    @method("powered-saliency", family="gradient", summary="|d score / d input| to a power", paper="a test's own",
            options=[Option("saliency_power", float, 2.0, "the power the saliency is raised to", minimum=0)])
    def powered_saliency(context: GradientContext) -> np.ndarray:
        return np.abs(context.at_images).max(axis=-1) ** context.options.saliency_power
''')


@pytest.fixture()
def plugin_path(tmp_path):
    site = tmp_path / "site"
    (site / "throwaway_xai-0.1.dist-info").mkdir(parents=True)
    (site / "throwaway_xai.py").write_text(PLUGIN)
    (site / "throwaway_xai-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: throwaway-xai\nVersion: 0.1\n")
    (site / "throwaway_xai-0.1.dist-info" / "entry_points.txt").write_text("[xaicli.methods]\npowered = throwaway_xai\n")
    return site


def _xai(site, *args, check=True):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "xaicli", *map(str, args)], env=env, capture_output=True, text=True,
                          check=check)


def test_a_method_from_another_package_gets_its_option_everywhere(plugin_path, tiny_model, image_folder, tmp_path):
    listed = " ".join(_xai(plugin_path, "methods").stdout.split())
    assert "powered-saliency [gradient] |d score / d input| to a power a test's own" in listed
    help_text = " ".join(_xai(plugin_path, "run", "--help").stdout.split())
    assert "--saliency-power FLOAT powered-saliency: the power the saliency is raised to. [default: 2.0]" in help_text

    config = tmp_path / "run.toml"
    config.write_text("method = ['powered-saliency', 'saliency']\nsaliency-power = 1.0\nsave = 'raw'\n")
    out = tmp_path / "out"
    _xai(plugin_path, "run", tiny_model, image_folder, "-o", out, "-c", config, "-q", check=False)
    options = json.loads((out / "run.json").read_text())["options"]
    assert options["saliency_power"] == 1.0 and options["methods"] == ["powered-saliency", "saliency"]

    import numpy as np

    powered, plain = (np.load(out / f"a.png.{method}.npy") for method in ("powered-saliency", "saliency"))
    np.testing.assert_array_equal(powered, plain)  # to the power 1, the method is saliency

    refused = _xai(plugin_path, "run", tiny_model, image_folder, "-o", out, "-c", config, "--resume",
                   "--saliency-power", "3", check=False)
    assert refused.returncode == 2 and "used other settings (saliency_power)" in refused.stderr
    bad = _xai(plugin_path, "run", tiny_model, image_folder, "-o", tmp_path / "bad", "--saliency-power", "-1",
               check=False)
    assert bad.returncode == 2 and bad.stderr.strip().endswith("--saliency-power must be 0 or more, got -1.0")


def test_the_python_api_takes_the_option_as_a_keyword(plugin_path, tiny_model, image_folder):
    """The option reaches the method: a square root keeps the order of the pixels and changes the values."""
    script = textwrap.dedent(f"""
        import numpy as np, xaicli
        image = {str(image_folder / 'a.png')!r}
        powered = xaicli.Explainer({str(tiny_model)!r}, methods="powered-saliency,saliency", saliency_power=0.5)
        maps = powered.explain(image).maps
        same_order = np.array_equal(np.argsort(maps["powered-saliency"], axis=None, kind="stable"),
                                    np.argsort(maps["saliency"], axis=None, kind="stable"))
        print(maps["powered-saliency"].shape, same_order, np.allclose(maps["powered-saliency"], maps["saliency"]))
    """)
    env = {**os.environ, "PYTHONPATH": str(plugin_path)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "(1, 16, 16) True False"
