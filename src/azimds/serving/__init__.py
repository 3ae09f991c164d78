"""Serving: the guest plane's HTTP/1.1 server and the listeners both planes are served on."""
