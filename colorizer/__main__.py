import sys

from colorizer.cli import main

sys.exit(main())
