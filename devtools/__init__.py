"""Development tools shared by the tests, the demo (examples/demo.py) and the benchmark
(bench/): a software TPM runner and the driver of the C test host.

Never installed and never imported by pypam, pinutil or modules/: it exists only in a
source checkout. pytest fixtures stay in tests/support/, on top of these.
"""
