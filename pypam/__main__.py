"""`python -m pypam`: the pypam admin command (see docs/pypam.md)."""
import sys

from pypam.stack.cli import main

sys.exit(main())
