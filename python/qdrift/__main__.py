"""`python -m qdrift`: the same as the `qdrift` command."""
import sys

from .cli import main

sys.exit(main())
