"""`python -m hat.convert`: the `convert-llama` command line (`hat.convert.cli`)."""

import sys

from .cli import main

sys.exit(main())
