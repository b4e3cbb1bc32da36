"""The IRC door: standard IRC clients (irssi, WeeChat, HexChat) in chatd's rooms."""
