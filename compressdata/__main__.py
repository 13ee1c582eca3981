"""`python -m compressdata` runs the command line."""

import sys

from compressdata.cli import main

sys.exit(main())
