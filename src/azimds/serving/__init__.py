"""Serving: the listeners both planes are served on, and the guest plane's HTTP/1.1 server.

``listeners.py`` checks, binds and serves them; the guest plane through ``protocol.py`` (the
asyncio protocol) and ``parse.py`` (reading requests, sans I/O), the control plane through
``asgi.py`` (granian, embedded). ``exchange.py`` is the contract between the guest plane's
server and its app; ``limits.py`` holds the limits both servers keep.
"""
