"""The doors: each decodes its wire, calls the core, renders its events."""
