"""Serving the API over real HTTP on a free loopback port (see :mod:`controller.api.server`)."""

from controller.api.server import serve_http

__all__ = ["serve_http"]
