"""``python -m convergent``: the same as the ``convergent`` command."""

import sys

from convergent.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
