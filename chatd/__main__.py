"""``python -m chatd``: the admin command line."""

import sys

from chatd.ops.admin import main

sys.exit(main())
