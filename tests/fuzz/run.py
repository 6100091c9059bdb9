"""Run one fuzz target under atheris (libFuzzer): `run.py TARGET [libFuzzer options]`.

    .venv/bin/python tests/fuzz/run.py policy -runs=3000 -seed=1   # bounded, repeatable
    make fuzz                                                       # every target, longer

The kept corpus is tests/fuzz/corpus/TARGET/ (valid examples to start from). libFuzzer
writes the new inputs it finds into the FIRST corpus directory given, so the bounded
run of `make test` puts a temporary directory first and the kept corpus second (read
only); `make fuzz` adds its finds to the kept corpus. A crash (an exception other than
the target's domain error, or a failed check) or a hang (-timeout) exits non-zero and
leaves the input in -artifact_prefix.
"""
from __future__ import annotations

import os
import sys

import atheris

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "modules")]

with atheris.instrument_imports(include=["pinutil", "pypam", "tpm_pin", "master_key"]):
    import master_key  # noqa: F401 - instrumented here, used by the targets
    import tpm_pin  # noqa: F401

    from pinutil.cli import app as cli  # noqa: F401
    from pinutil.service import protocol, server, verbs  # noqa: F401
    from pypam import arguments, loader  # noqa: F401

from tests.fuzz.targets import TARGETS


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: run.py {{{','.join(TARGETS)}}} [libFuzzer options] [corpus dirs]")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
