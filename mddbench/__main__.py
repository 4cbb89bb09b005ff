import sys

from mddbench.cli import main

sys.exit(main())
