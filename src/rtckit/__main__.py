"""``python -m rtckit`` runs the command line."""

import sys

from rtckit.cli import main

sys.exit(main())
