"""`python -m genfleet` is the `genfleet` command."""

import sys

from genfleet.cli import main

sys.exit(main())
