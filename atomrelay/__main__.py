"""``python -m atomrelay`` and the frozen binary's entry point."""

import sys

from atomrelay.cli import main

if __name__ == "__main__":
    sys.exit(main())
