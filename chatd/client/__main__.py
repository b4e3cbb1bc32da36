"""Lets ``python -m chatd.client`` run the console client."""

import sys

from chatd.client.main import main

sys.exit(main())
