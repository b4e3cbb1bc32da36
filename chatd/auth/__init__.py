"""Who may come in: the cred checker and realm, accounts, bcrypt, throttles."""
