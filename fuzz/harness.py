"""What the fuzzers share: libFuzzer's arguments, the corpora, the smoke mode.

Each fuzzer is a script, ``python fuzz/fuzz_NAME.py [--smoke] [libFuzzer flags] [DIR|FILE ...]``:

- no directory or file given: the working corpus ``fuzz/corpus/NAME/`` (new inputs land there;
  git ignores it) and the checked-in seeds ``fuzz/seeds/NAME/`` (read only);
- ``fuzz/NAME.dict`` is passed as ``-dict=`` unless a dictionary is given;
- crashes go to ``fuzz/artifacts/`` (``-artifact_prefix=``) unless a prefix is given;
- ``--smoke``: a bounded, reproducible run for CI (a fixed seed, a run count and a time cap,
  the seeds copied to a throwaway corpus), which exits non-zero on any crash;
- a FILE instead of a directory runs just that input (to reproduce a crash).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
SMOKE_SECONDS = 30  # a cap on a smoke run, should this machine be much slower


def libfuzzer_argv(name: str, argv: list[str], smoke_runs: int) -> list[str]:
    """``argv`` with our defaults filled in and ``--smoke`` expanded."""
    program, *rest = argv
    smoke = "--smoke" in rest
    rest = [arg for arg in rest if arg != "--smoke"]
    flags = [arg for arg in rest if arg.startswith("-")]
    inputs = [arg for arg in rest if not arg.startswith("-")]
    given = {flag.split("=", 1)[0] for flag in flags}
    dictionary = HERE / f"{name}.dict"
    if "-dict" not in given and dictionary.exists():
        flags.append(f"-dict={dictionary}")
    if "-artifact_prefix" not in given:
        (HERE / "artifacts").mkdir(exist_ok=True)
        flags.append(f"-artifact_prefix={HERE / 'artifacts'}/{name}-")
    seeds = HERE / "seeds" / name
    if smoke:
        for flag, value in (
            ("-seed", 1),
            ("-runs", smoke_runs),
            ("-max_total_time", SMOKE_SECONDS),
        ):
            if flag not in given:
                flags.append(f"{flag}={value}")
        if not inputs:  # a fresh corpus each time, so the run is the same every time
            work = Path(tempfile.gettempdir()) / f"azimds-fuzz-smoke-{name}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            for seed in seeds.iterdir():
                shutil.copy(seed, work / seed.name)
            inputs = [str(work)]
    elif not inputs:
        corpus = HERE / "corpus" / name
        corpus.mkdir(parents=True, exist_ok=True)
        inputs = [str(corpus), str(seeds)]
    return [program, *flags, *inputs]


def main(name: str, test_one_input: Callable[[bytes], None], smoke_runs: int) -> None:
    """Fuzz; ``smoke_runs``: how many executions ``--smoke`` makes (a few seconds' worth)."""
    atheris.Setup(libfuzzer_argv(name, sys.argv, smoke_runs), test_one_input)
    atheris.Fuzz()
