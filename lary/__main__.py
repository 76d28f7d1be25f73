"""`python -m lary ...` (also what `accelerate launch -m lary ...` runs)."""

import sys

from lary.cli import main

sys.exit(main())
