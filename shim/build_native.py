"""Compile pam_pypam.so and the pinutil launcher with every path fixed at build time.

Used by setup.py (`build_ext`); the Makefile chooses the paths: the source tree for
`make build`, the system layout for `make install`. Nothing at run time can change
them: that is the point (see shared/docs/embedding-facts.md).
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


def defines(search_path: list[str], module_dir: str) -> list[str]:
    home = sys.base_prefix
    executable = os.path.realpath(os.path.join(home, "bin", f"python{sysconfig.get_config_var('VERSION')}"))
    for path in [home, executable, module_dir, *search_path]:
        if not os.path.isabs(path) or ":" in path or '"' in path:
            raise SystemExit(f"build path must be absolute, without ':' or quotes: {path}")
    return [
        f'-DPYPAM_PYTHON_HOME="{home}"',
        f'-DPYPAM_PYTHON_EXECUTABLE="{executable}"',
        f'-DPYPAM_SEARCH_PATH="{":".join(search_path)}"',
        f'-DPYPAM_MODULE_DIR="{module_dir}"',
    ]


def stdlib_paths() -> list[str]:
    stdlib = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["stdlib"]
    return [stdlib, os.path.join(stdlib, "lib-dynload")]


def build(out_dir: str, search_path: list[str], module_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    cflags, ldflags, soname = python_flags()
    common = HARDENING + cflags + defines(search_path, module_dir)
    embed = os.path.join(HERE, "embed.c")
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-fvisibility=hidden", *common,
         f'-DPYPAM_LIBPYTHON="{soname}"',
         f"-Wl,--version-script={os.path.join(HERE, 'pam_pypam.map')}",
         "-Wl,-z,nodelete", "-Wl,-z,relro", "-Wl,-z,now", "-Wl,--no-undefined",
         "-o", os.path.join(out_dir, "pam_pypam.so"),
         os.path.join(HERE, "pam_pypam.c"), embed, *ldflags, "-lpam", "-ldl", "-lpthread"],
        check=True)
    subprocess.run(
        ["gcc", "-fPIE", "-pie", *common, "-Wl,-z,relro", "-Wl,-z,now",
         "-o", os.path.join(out_dir, "pinutil"),
         os.path.join(HERE, "pinutil_launcher.c"), embed, *ldflags],
        check=True)


def main() -> None:
    out_dir, module_dir, *search_path = sys.argv[1:]
    build(out_dir, search_path + stdlib_paths(), module_dir)


if __name__ == "__main__":
    main()
