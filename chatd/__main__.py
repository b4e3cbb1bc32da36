"""``python -m chatd``: the admin command line."""

import sys

from chatd.admin import main

sys.exit(main())
