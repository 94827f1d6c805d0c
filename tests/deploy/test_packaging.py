"""The wheel `pip install .` builds: one top-level package, `genfleet`, holding the three folders' code, the
embedded model's weights and the web page's files."""

import shutil
import subprocess
import sys
import zipfile

from tests.helpers import ROOT


def test_the_wheel_installs_one_namespace_and_the_embedded_weights(tmp_path):
    # built from a copy (links kept as links), so the build leaves nothing in the checkout
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "__pycache__", ".genfleet", "genfleet-output", "genfleet-train"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(tmp_path), str(source)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("genfleet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"genfleet", wheel.name.split("-py3")[0] + ".dist-info"}
    for module in ("genfleet/api/app.py", "genfleet/shared/keys.py", "genfleet/workers/runner.py",
                   "genfleet/cli.py", "genfleet/workers/embedded/weights/pipeline/model_index.json",
                   "genfleet/api/ui/index.html", "genfleet/api/ui/app.js", "genfleet/api/ui/style.css"):
        assert module in names, module
    assert any(n.endswith(".safetensors") for n in names)
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "genfleet = genfleet.cli:main" in entry
