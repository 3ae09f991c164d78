"""Every shell block of README.md and docs/getting-started.md runs, in order, on a fresh checkout.

A reader pastes the blocks of one page into one terminal, top to bottom; so does this test: each
page is one bash session (``set -e``: any failing command fails it) in a copy of the tracked
files, whose first README command makes the virtual environment everything else uses.

What a reader does that a script cannot is written down, line by line, in ``REWRITES``, each with
its reason: a node a reader leaves running in the foreground runs in the background here (and a
new one replaces it, as Ctrl+C and the next command would), commands that need what CI cannot
have (the internet, a disk image, the host's own addresses) are left out. A block or line this
test does not know fails it, so a new command in the docs is either run or excused here.
Lines written as ``$ command`` are followed by the output they print, which must match.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

PAGES = ("README.md", "docs/getting-started.md")

LEFT_OUT = ":"  # the shell's no-op: a line left out, with its reason in a comment

# Doc line (stripped) -> the shell text run instead, and why.
REWRITES: dict[str, tuple[str, str]] = {
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/pytest": (
        LEFT_OUT,
        "the test suite itself, which .ci/run runs",
    ),
    "pip install 'git+https://github.com/azimds/azimds'": (
        LEFT_OUT,
        "needs github.com; CI has no internet. README's first command installs the checkout",
    ),
    "pip install .": (
        LEFT_OUT,
        "builds a wheel and installs it: tests/test_packaging.py does, and README's first"
        " command installed this checkout already",
    ),
    "python -m build && pip install dist/azimds-0.1.0-py3-none-any.whl": (
        LEFT_OUT,
        "tests/test_packaging.py builds the wheel and sdist and installs the wheel",
    ),
    "sudo azimds serve --listen 169.254.169.254:80": (
        LEFT_OUT,
        "needs 169.254.169.254 on the host; tests/host/test_link_local.py serves it in a namespace",
    ),
    "azimds serve --config vm.yaml": (
        "serve azimds serve --config vm.yaml && serve azimds serve",
        "an alternative to the line before; the next block changes the default node again",
    ),
    'curl -s -H Metadata:true "http://127.0.0.1:16925/metadata/instance/compute/tags'
    '?api-version=2021-02-01&format=text"': (
        "serve azimds serve --config vm.yaml && "
        'curl -s -H Metadata:true "http://127.0.0.1:16925/metadata/instance/compute/tags'
        '?api-version=2021-02-01&format=text"',
        "the reader has started the node with the vm.yaml above",
    ),
    "azimds run -- ./integration-tests.sh": (
        "printf '#!/bin/sh\\nexec azimds get /metadata/instance/compute/vmId\\n'"
        " > integration-tests.sh && chmod +x integration-tests.sh"
        " && azimds run -- ./integration-tests.sh",
        "the job's own script; here one that reads IMDS at the real address",
    ),
    "bash examples/qemu/run-vm.sh ubuntu-azure.qcow2 seed.iso": (
        LEFT_OUT,
        "needs a disk image and QEMU; the networking it relies on is tested in tests/host",
    ),
    "sudo azimds serve --link-local --config vm.yaml &": (
        LEFT_OUT,
        "adds 169.254.169.254 to this host's loopback; tests/host/test_link_local.py covers it",
    ),
    "sudo azimds serve --link-local --caller-mode source-ip --fleet fleet.yaml --watch": (
        LEFT_OUT,
        "adds 169.254.169.254 to this host's loopback; tests/node/test_namespaces.py serves"
        " a fleet by source address",
    ),
}

# A node left running is replaced by the next one, as a reader's Ctrl+C and next command would;
# `azimds wait` is what the docs use to know it answers.
PRELUDE = r"""
set -e -o pipefail
serving=
serve() {  # serve AZIMDS serve ARGS...: a node in the background, once it answers
    if [[ -n $serving ]]; then kill "$serving"; wait "$serving" || true; fi
    "$@" > "node-$RANDOM.log" 2>&1 &
    serving=$!
    "$1" wait --timeout 30
}
trap '[[ -z $serving ]] || { kill "$serving"; wait "$serving" || true; }' EXIT
"""

SERVE = re.compile(r"^(?P<cmd>(?:\.venv/bin/)?azimds serve(?: [^&#]*?)?)\s*&?\s*(?:#.*)?$")


def shell_blocks(page: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", (REPO / page).read_text(), re.S)


def command_of(line: str) -> str:
    """The line without its trailing comment (docs align comments with spaces)."""
    return re.sub(r"\s+#.*$", "", line).strip()


def script_for(page: str) -> tuple[str, list[str]]:
    """The page as one bash script, and the expected output of its ``$`` lines."""
    lines, expected = [PRELUDE], []
    for number, block in enumerate(shell_blocks(page), 1):
        lines.append(f"echo '--- {page} block {number}' >&2")
        block_lines = block.splitlines()
        for index, raw in enumerate(block_lines):
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            if raw.startswith("$ "):
                lines.append(run_line(raw[2:], page))
                output = []
                for following in block_lines[index + 1 :]:
                    if following.startswith("$ "):
                        break
                    output.append(following)
                expected.append("\n".join(output).strip())
                continue
            if any(earlier.startswith("$ ") for earlier in block_lines[:index]):
                continue  # output of a `$` line
            lines.append(run_line(raw, page))
    return "\n".join(lines) + "\n", expected


def run_line(raw: str, page: str) -> str:
    command = command_of(raw)
    for doc_line, (replacement, _) in REWRITES.items():
        if command == doc_line or command.startswith(doc_line + " "):
            return replacement
    # The README's first command ends in a node left running in the foreground.
    parts = command.split(" && ")
    if any(SERVE.match(part) for part in parts):
        return " && ".join(
            "serve " + match["cmd"] if (match := SERVE.match(part)) else part for part in parts
        )
    if command.startswith("sudo "):
        raise AssertionError(f"{page}: `{command}` needs root on the host: add it to REWRITES")
    return command


def fresh_checkout(where: Path) -> Path:
    """The tracked files as they are in the working tree: what a clone of this change holds."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, tracked):
        source = REPO / os.fsdecode(name)
        if source.is_file():
            target = where / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return where


def vm_yaml() -> str:
    """README's `vm.yaml`, the YAML block a reader saves under that name."""
    readme = (REPO / "README.md").read_text()
    return next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if b.startswith("vm:"))


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fresh_checkout(tmp_path_factory.mktemp("checkout"))


def test_every_line_has_a_place() -> None:
    """Every rewrite still matches a line of the docs (a stale one would excuse nothing)."""
    commands = {
        command_of(line.removeprefix("$ "))
        for page in PAGES
        for block in shell_blocks(page)
        for line in block.splitlines()
    }
    for doc_line, (_, reason) in REWRITES.items():
        assert any(c == doc_line or c.startswith(doc_line + " ") for c in commands), doc_line
        assert reason, doc_line


@pytest.mark.skipif(os.geteuid() != 0, reason="`azimds run` in the docs needs root here")
@pytest.mark.parametrize("page", PAGES)
def test_page_runs_on_a_fresh_checkout(checkout: Path, page: str) -> None:
    script, expected = script_for(page)
    (checkout / "vm.yaml").write_text(vm_yaml())
    home = checkout.parent / "home"
    home.mkdir(exist_ok=True)
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AZIMDS_", "AZURE_", "VIRTUAL_ENV", "PYTHON"))
    }
    environment.update(
        HOME=str(home),
        AZIMDS_STATE_DIR=str(home / "state"),  # not /var/lib/azimds, root's default
        PATH=f"{checkout / '.venv' / 'bin'}:{os.environ['PATH']}",
        NO_PROXY="127.0.0.1,localhost",
    )
    run = subprocess.run(
        ["bash", "-c", script],
        cwd=checkout,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, (
        f"{page} failed (exit {run.returncode}):\n--- script\n{script}\n"
        f"--- stderr\n{run.stderr[-4000:]}\n--- stdout\n{run.stdout[-4000:]}"
    )
    for output in expected:
        assert output in run.stdout, f"expected {output!r} in:\n{run.stdout}"
