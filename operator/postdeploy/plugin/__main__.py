"""``python -m postdeploy.plugin``: the same as ``kubectl postdeploy``."""

import sys

from postdeploy.plugin.cli import main

sys.exit(main())
