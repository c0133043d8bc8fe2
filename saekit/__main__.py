"""`python -m saekit ...`: the command line (as `torchrun -m saekit train ...` runs it)."""

import sys

from saekit.cli import main

sys.exit(main())
