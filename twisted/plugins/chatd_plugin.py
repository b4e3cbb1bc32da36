"""twistd plugin: ``twistd -n chatd --listen tcp:8004 --db chatd.sqlite3``.

Each option sets the environment variable of the same setting, so the
plugin, ``chatd.tac`` and the documentation share one list of settings and
one validation.
"""

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer

OPTION_VARIABLES = {
    "listen": "CHATD_LISTEN",
    "db": "CHATD_DB",
    "registration": "CHATD_REGISTRATION",
    "bcrypt-rounds": "CHATD_BCRYPT_ROUNDS",
    "rate-limit": "CHATD_RATE_LIMIT",
}


class Options(usage.Options):
    """Command-line options of the chatd plugin; unset ones fall back to CHATD_*."""

    optParameters = [
        ["listen", None, None, "endpoint descriptions, comma-separated (CHATD_LISTEN)"],
        ["db", None, None, "SQLite database file (CHATD_DB)"],
        ["registration", None, None, "open or closed (CHATD_REGISTRATION)"],
        ["bcrypt-rounds", None, None, "bcrypt cost for new hashes (CHATD_BCRYPT_ROUNDS)"],
        ["rate-limit", None, None, "lines-per-second/burst or off (CHATD_RATE_LIMIT)"],
    ]


@implementer(IServiceMaker, IPlugin)
class ChatdServiceMaker:
    """Makes the chatd server service for twistd."""

    tapname = "chatd"
    description = "chatd, a small multi-user chat server"
    options = Options

    def makeService(self, options):
        """Build the server from CHATD_* variables overridden by the options given.

        The settings are read and the server built as for ``chatd.tac``; the
        server installs its log observer (``CHATD_LOG_FORMAT``) when twistd
        adds it to the application.
        """
        import os

        from chatd.app import make_server

        environ = dict(os.environ)
        for option, variable in OPTION_VARIABLES.items():
            if options[option] is not None:
                environ[variable] = options[option]
        return make_server(environ)


serviceMaker = ChatdServiceMaker()
