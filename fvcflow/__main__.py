import sys

from fvcflow.cli import main

sys.exit(main())
