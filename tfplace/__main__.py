"""`python -m tfplace`: the same console script as `tfplace`."""
import sys

from tfplace.cli import main

__all__: list[str] = []

sys.exit(main())
