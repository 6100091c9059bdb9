"""pypam: PAM modules in Python, and the TPM PIN / master-key modules built on it.

`python setup.py build_ext` builds the cffi modules (pypam._libpam, pinutil.tpm._tss) and,
when PYPAM_NATIVE_OUT is set, the native shim and launcher with the paths given in
PYPAM_MODULE_DIR and PYPAM_SEARCH_PATH (the Makefile sets all three). cffi must be
installed first (requirements.txt): `setup_requires` is deprecated and warns loudly.
"""
import os
import sys

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim"))


class BuildWithNative(build_ext):
    def run(self):
        super().run()
        out = os.environ.get("PYPAM_NATIVE_OUT")
        if out:
            import build_native

            search = [p for p in os.environ["PYPAM_SEARCH_PATH"].split(":") if p]
            build_native.build(out, search + build_native.stdlib_paths(),
                               os.environ["PYPAM_MODULE_DIR"])


setup(
    name="pypam",
    version="0.1.0",
    description="Linux PAM modules in Python; TPM 2.0 PIN login and master key",
    # Every package below pypam/ and pinutil/, found rather than listed: a new one cannot
    # be left out of `setup.py build` (the Debian package) by forgetting this line.
    packages=find_packages(include=["pypam", "pypam.*", "pinutil", "pinutil.*"]),
    package_data={"pinutil.master_key": ["bip39_english.txt"]},
    python_requires=">=3.11",
    install_requires=["cffi>=1.15", "cryptography>=44"],
    cffi_modules=["pypam/_libpam_build.py:ffi", "pinutil/tpm/binding_build.py:ffi"],
    cmdclass={"build_ext": BuildWithNative},
)
