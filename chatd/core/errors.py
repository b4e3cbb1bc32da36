"""Errors that reach a client as ``ERR <code> <text>``."""


class ChatError(Exception):
    """A command failed in a way the client is told about.

    ``code`` is one of the stable error tokens of the wire protocol and
    ``text`` is a short explanation for humans.
    """

    def __init__(self, code: str, text: str = "") -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text

    def __str__(self) -> str:
        return f"{self.code}: {self.text}" if self.text else self.code
