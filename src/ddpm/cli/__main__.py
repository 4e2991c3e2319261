"""`python -m ddpm.cli ...` runs the `ddpm` command."""

import sys

from ddpm.cli import main

sys.exit(main())
