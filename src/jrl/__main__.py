import sys

from jrl.cli import main

sys.exit(main())
