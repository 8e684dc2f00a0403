"""``python -m testbed up|down|env``: see ``testbed.bed``."""

import sys

from testbed import bed

sys.exit(bed.main())
