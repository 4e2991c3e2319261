"""`python -m ddpm ...` runs the `ddpm` command (and `torchrun ... -m ddpm train ...` trains on
several GPUs)."""

import sys

from ddpm.cli import main

sys.exit(main())
