import sys

from fixray.cli import main

sys.exit(main())
