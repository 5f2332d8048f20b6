"""``python -m kdlab ...``: the same as the ``kdlab`` console script (see kdlab.cli)."""
import sys

from kdlab.cli import main

sys.exit(main())
