"""The release: the sdist and wheel ``python -m build`` makes, as an index and a user get them.

One build per run (a module fixture, ~10 s: ``build`` makes the sdist, then the wheel from
the unpacked sdist, so the sdist is proven complete enough to build from). The wheel is then
installed into a fresh, plain venv with its dependencies from the index, as ``pip install
azimds`` will do (~15 s with pip's cache): a ``--no-deps`` install into a venv that sees the
project's packages would pass even with a dependency missing from the metadata.
"""

from __future__ import annotations

import email
import email.message
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VERSION = "0.1.0"
URL = "https://github.com/azimds/azimds"
PACKAGE_DATA = ("azimds/py.typed", "azimds/fleet/example-vm.json", "azimds/guest/iis-404.html")


def clean_env() -> dict[str, str]:
    """No AZIMDS_ settings, no PYTHONPATH or the like leading back to the checkout."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AZIMDS_", "PYTHON"))}


def run(*command: str | Path, cwd: Path, timeout: float = 120) -> str:
    result = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=clean_env(), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, f"{command}:\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, REPO, cwd=out, timeout=300)
    return out


def wheel_of(dist: Path) -> Path:
    return dist / f"azimds-{VERSION}-py3-none-any.whl"


def sdist_of(dist: Path) -> Path:
    return dist / f"azimds-{VERSION}.tar.gz"


def test_twine_check_passes(dist: Path) -> None:
    output = run(
        sys.executable, "-m", "twine", "check", "--strict", wheel_of(dist), sdist_of(dist), cwd=dist
    )
    assert output.count("PASSED") == 2, output


def test_the_wheel_holds_the_package_data_license_and_metadata(dist: Path) -> None:
    with zipfile.ZipFile(wheel_of(dist)) as wheel:
        names = set(wheel.namelist())
        info = f"azimds-{VERSION}.dist-info"
        metadata = email.message_from_bytes(wheel.read(f"{info}/METADATA"))
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert set(PACKAGE_DATA) <= names
    assert f"{info}/licenses/LICENSE" in names
    assert not [n for n in names if n.startswith(("tests/", "src/", "docs/"))]
    assert "[pytest11]\nazimds = azimds.kit.pytest_plugin" in entry_points
    assert "azimds = azimds.cli:main" in entry_points
    check_metadata(metadata)


def check_metadata(metadata: email.message.Message) -> None:
    assert metadata["Name"] == "azimds" and metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.11"
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL", []))
    assert set(urls) == {"Homepage", "Documentation", "Source", "Issues"}
    assert all(u.startswith(URL) for u in urls.values())
    classifiers = metadata.get_all("Classifier", [])
    for expected in (
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Operating System :: POSIX :: Linux",
        "Framework :: Pytest",
        "Development Status :: 4 - Beta",
    ):
        assert expected in classifiers
    # PEP 639: License-Expression replaces the License :: classifiers; indexes may refuse both.
    assert not [c for c in classifiers if c.startswith("License ::")]
    assert metadata["Keywords"] and "imds" in metadata["Keywords"].split(",")
    assert "# azimds" in metadata.get_payload()  # the README, as the index's description


def test_the_sdist_holds_the_sources_license_and_package_data(dist: Path) -> None:
    with tarfile.open(sdist_of(dist)) as sdist:
        root = f"azimds-{VERSION}/"
        names = {n.removeprefix(root) for n in sdist.getnames()}
        pkg_info = sdist.extractfile(f"{root}PKG-INFO")
        assert pkg_info is not None
        metadata = email.message_from_bytes(pkg_info.read())
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO"} <= names
    assert {f"src/{name}" for name in PACKAGE_DATA} <= names
    assert "tests/conftest.py" in names
    assert not [n for n in names if n.startswith((".venv", ".git/")) or "__pycache__" in n]
    check_metadata(metadata)


def test_the_wheel_installs_and_runs_in_a_fresh_venv(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", wheel_of(dist), cwd=tmp_path, timeout=180)

    assert "serve" in run(venv / "bin" / "azimds", "--help", cwd=tmp_path)
    imported = run(
        python, "-c",
        "import azimds, importlib.metadata as m; print(azimds.__file__); "
        "print(m.entry_points(group='pytest11', name='azimds')['azimds'].value)",
        cwd=tmp_path,
    )  # fmt: skip
    where, plugins = imported.splitlines()
    assert where.startswith(str(venv)), where  # the installed copy, not the checkout
    assert plugins == "azimds.kit.pytest_plugin"  # the imds fixture, for pytest to load

    # The node serves from the installed copy: its package data (the example VM) is there.
    state = tmp_path / "state"
    serve = subprocess.Popen(
        [venv / "bin" / "azimds", "serve", "--state-dir", state, "--store", "memory:",
         "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    watchdog = threading.Timer(60, serve.kill)  # a hung start fails the test, not the run
    watchdog.start()
    try:
        assert serve.stdout is not None
        banner = []
        for line in serve.stdout:
            banner.append(line)
            if "Ctrl+C" in line:
                break
        assert "Azure IMDS serving VM 'examplevmname'" in "".join(banner), banner
    finally:
        watchdog.cancel()
        serve.terminate()
        serve.communicate(timeout=10)
