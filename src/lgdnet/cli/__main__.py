import sys

from lgdnet.cli import main

sys.exit(main())
