"""pypam.stack stays off the login path and needs nothing beyond the stdlib."""
import subprocess
import sys

from .harness import ROOT


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sys.modules))"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_login_path_never_imports_the_stack_engine():
    loaded = _modules_after("import pypam, pypam.dispatch")
    assert not any(m.startswith("pypam.stack") for m in loaded)


def test_the_stack_engine_imports_only_the_stdlib_and_pypam_constants():
    loaded = _modules_after("import pypam.stack.cli")
    assert "cffi" not in loaded and "_cffi_backend" not in loaded
    assert not {m for m in loaded if m.startswith("pypam.") and not m.startswith(
        ("pypam.stack", "pypam.constants", "pypam.conversation", "pypam.errors"))}
