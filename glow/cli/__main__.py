"""`python -m glow.cli`: the `glow` command."""

from glow.cli import main

main()
