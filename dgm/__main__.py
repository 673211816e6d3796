"""``python -m dgm COMMAND ...``: the same as the ``dgm`` console script (dgm.cli)."""

import sys

from dgm.cli import main

sys.exit(main())
