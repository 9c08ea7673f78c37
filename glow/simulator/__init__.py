"""The bundled model simulator (being split into modules by concern; see core.py for now)."""

from glow.simulator.core import *  # noqa: F403
from glow.simulator.core import DEFAULT_SCENARIOS, main  # noqa: F401
