"""The line protocol door (nc, telnet, the console client)."""
