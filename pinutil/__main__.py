"""`python -m pinutil`: the same as the installed `pinutil` command."""
import sys

from pinutil.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
