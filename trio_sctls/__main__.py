"""``python -m trio_sctls``: the ``trio-sctls`` command (see :mod:`trio_sctls._cli`)."""

import sys

from ._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
