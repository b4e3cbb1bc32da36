"""chatd-client: the threaded console client for chatd.

The reactor runs in the main thread and owns the connection; one input thread
reads the keyboard (or a pipe) and hands each line to the reactor with
``reactor.callFromThread``.
"""
