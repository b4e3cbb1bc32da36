"""chatd for twistd: ``twistd -ny chatd.tac``, configured by CHATD_* variables."""

from chatd.app import make_application

application = make_application()
