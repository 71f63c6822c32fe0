"""``python -m datastack.cli``."""

import sys

from datastack.cli import main

sys.exit(main())
