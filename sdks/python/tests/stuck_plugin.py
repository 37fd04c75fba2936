"""A plugin whose handlers ignore cancellation, for the drain-timeout tests."""

import asyncio
import time

from berth_plugin import Plugin

plugin = Plugin("stuck", "0.1.0", drain_timeout=0.5)


@plugin.capability("block")
def block(input, ctx):
    time.sleep(30)  # ignores ctx.cancelled on purpose
    return {}


@plugin.capability("shrug")
async def shrug(input, ctx):
    while True:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass  # swallows cancellation on purpose


if __name__ == "__main__":
    plugin.run()
