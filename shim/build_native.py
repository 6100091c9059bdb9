"""Compile pam_pypam.so and the pinutil launcher with every path fixed at build time.

Used by setup.py (`build_ext`); the Makefile chooses the paths: the source tree for
`make build`, the system layout for `make install`. Nothing at run time can change
them: that is the point (README, "Security design").
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

HERE = os.path.dirname(os.path.abspath(__file__))
HARDENING = ["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-D_FORTIFY_SOURCE=2",
             "-fstack-protector-strong", "-fno-strict-aliasing"]


def python_flags() -> tuple[list[str], list[str], str]:
    """Compiler flags, linker flags and libpython soname of THIS interpreter."""
    version = sysconfig.get_config_var("VERSION")  # e.g. "3.11"
    include = sysconfig.get_paths()["include"]
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME")  # libpython3.11.so.1.0
    return [f"-I{include}"], [f"-L{libdir}", f"-lpython{version}"], soname


def defines(search_path: list[str], module_dir: str, home: str | None = None) -> list[str]:
    """`home` is the Python installation prefix (default: this interpreter's); the
    tests point it at a copy they then break."""
    home = home or sys.base_prefix
    version = sysconfig.get_config_var("VERSION")
    executable = os.path.join(home, "bin", f"python{version}")
    if home == sys.base_prefix:
        executable = os.path.realpath(executable)
    stdlib = stdlib_paths(home)[0]
    for path in [home, executable, stdlib, module_dir, *search_path]:
        if not os.path.isabs(path) or ":" in path or '"' in path:
            raise SystemExit(f"build path must be absolute, without ':' or quotes: {path}")
    return [
        f'-DPYPAM_PYTHON_HOME="{home}"',
        f'-DPYPAM_PYTHON_EXECUTABLE="{executable}"',
        f'-DPYPAM_STDLIB="{stdlib}"',
        f'-DPYPAM_SEARCH_PATH="{":".join(search_path)}"',
        f'-DPYPAM_MODULE_DIR="{module_dir}"',
    ]


def stdlib_paths(home: str | None = None) -> list[str]:
    """The standard library and its lib-dynload under `home` (default: this Python's)."""
    home = home or sys.base_prefix
    stdlib = sysconfig.get_paths(vars={"base": home, "platbase": home, "installed_base": home,
                                       "installed_platbase": home})["stdlib"]
    return [stdlib, os.path.join(stdlib, "lib-dynload")]


DEFAULT_POLICY_PATH = "/etc/pinpam/policy"


def _check_policy_path(path: str) -> str:
    # It is pasted into a Python string literal in the launcher.
    if not os.path.isabs(path) or any(c in path for c in "'\"\\\n"):
        raise SystemExit(f"policy path must be absolute, without quotes or backslashes: {path}")
    return path


def build_launcher(out_path: str, search_path: list[str], module_dir: str,
                   policy_path: str = DEFAULT_POLICY_PATH, home: str | None = None) -> None:
    """The pinutil launcher alone (tests build set-id copies with their own policy)."""
    cflags, ldflags, _ = python_flags()
    subprocess.run(
        ["gcc", "-fPIE", "-pie", *HARDENING, *cflags, *defines(search_path, module_dir, home),
         f'-DPINUTIL_POLICY_PATH="{_check_policy_path(policy_path)}"',
         "-Wl,-z,relro", "-Wl,-z,now", "-o", out_path,
         os.path.join(HERE, "pinutil_launcher.c"), os.path.join(HERE, "embed.c"), *ldflags],
        check=True)


def build(out_dir: str, search_path: list[str], module_dir: str,
          home: str | None = None) -> None:
    os.makedirs(out_dir, exist_ok=True)
    cflags, ldflags, soname = python_flags()
    common = HARDENING + cflags + defines(search_path, module_dir, home)
    embed = os.path.join(HERE, "embed.c")
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-fvisibility=hidden", *common,
         f'-DPYPAM_LIBPYTHON="{soname}"',
         f"-Wl,--version-script={os.path.join(HERE, 'pam_pypam.map')}",
         "-Wl,-z,nodelete", "-Wl,-z,relro", "-Wl,-z,now", "-Wl,--no-undefined",
         "-o", os.path.join(out_dir, "pam_pypam.so"),
         os.path.join(HERE, "pam_pypam.c"), embed, *ldflags, "-lpam", "-ldl", "-lpthread"],
        check=True)
    build_launcher(os.path.join(out_dir, "pinutil"), search_path, module_dir, home=home)


def main() -> None:
    out_dir, module_dir, *search_path = sys.argv[1:]
    build(out_dir, search_path + stdlib_paths(), module_dir)


if __name__ == "__main__":
    main()
