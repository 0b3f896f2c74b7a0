"""model/compat.py refuses a uni2ts or Lightning it was not written for, in one line saying what to install."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

from conftest import ROOT
from moirai_ft.model import compat


def test_the_installed_versions_are_the_supported_ones() -> None:
    compat.check_versions()  # the suite runs on the stack compat.py was written for
    assert compat.installed_versions()["uni2ts"] == compat.UNI2TS


@pytest.mark.parametrize("package, version, wanted", [
    ("uni2ts", "2.1.0", "pip install 'uni2ts==2.0.0'"),
    ("uni2ts", None, "pip install 'uni2ts==2.0.0'"),
    ("lightning", "3.0.0", "pip install 'lightning>=2.2,<3'"),
    ("lightning", "2.1.4", "pip install 'lightning>=2.2,<3'"),
])
def test_another_version_is_one_line_naming_it_and_what_to_install(package, version, wanted) -> None:
    installed = {**compat.installed_versions(), package: version}
    with pytest.raises(compat.UnsupportedVersion) as e:
        compat.check_versions(installed)
    message = str(e.value)
    assert "\n" not in message and wanted in message
    assert (f"{package} {version} is installed" if version else f"{package} is not installed") in message


def test_the_bounds_of_the_lightning_range() -> None:
    uni2ts = {"uni2ts": compat.UNI2TS}
    for ok in ("2.2.0", "2.6.6", "2.9.1.post0"):
        compat.check_versions({**uni2ts, "lightning": ok})
    for refused in ("2.1.9", "3.0.0rc1", "3.0.0", "not-a-version"):
        with pytest.raises(compat.UnsupportedVersion):
            compat.check_versions({**uni2ts, "lightning": refused})


def test_train_py_with_another_uni2ts_stops_in_one_line_with_exit_2(tmp_path) -> None:
    """The version string is patched in the process (importlib.metadata), not the library."""
    script = (
        "import importlib.metadata as m, runpy, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"  # this checkout's moirai_ft, as `python train.py` finds it
        "real = m.version\n"
        "m.version = lambda name: '2.1.0' if name == 'uni2ts' else real(name)\n"
        f"sys.argv = [{str(ROOT / 'train.py')!r}]\n"
        f"runpy.run_path({str(ROOT / 'train.py')!r}, run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "uni2ts 2.1.0 is installed" in lines[0], proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written: no outputs/ directory
    assert metadata.version("uni2ts") == compat.UNI2TS  # the patch stayed in that process
