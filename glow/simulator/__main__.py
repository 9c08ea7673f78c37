import sys

from glow.simulator.core import main

sys.exit(main())
