"""``python -m emseg``: the same as the ``emseg`` command."""

import sys

from emseg.cli import main

sys.exit(main())
