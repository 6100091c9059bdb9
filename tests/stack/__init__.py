"""Tests of the stack engine (pypam.stack) against real libpam."""
import os

# Hypothesis keeps a cache; in the tree it would make the checkout "unsafe" for the
# build's mode checks (files 0600), so it lives in build/.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "build", "hypothesis"))
