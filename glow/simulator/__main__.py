"""`python -m glow.simulator [--port N] [--scenarios PATH] ...`: see `glow.simulator.cli`."""

import sys

from glow.simulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
