"""``python -m lucid.serve``: see :func:`lucid.serve.cli.main`."""
import sys

from .cli import main

sys.exit(main())
