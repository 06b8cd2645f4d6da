"""The event loop the gateway runs best on: uvloop where it is installed (not Windows)."""

from __future__ import annotations

import asyncio


def new_event_loop(uvloop: bool = True) -> asyncio.AbstractEventLoop:
    if uvloop:
        try:
            import uvloop as _uvloop
        except ImportError:
            pass
        else:
            return _uvloop.new_event_loop()
    return asyncio.new_event_loop()
