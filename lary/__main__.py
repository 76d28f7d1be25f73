"""`python -m lary ...` (also what `accelerate launch -m lary ...` runs)."""

from lary.cli import run

run()
