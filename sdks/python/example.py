"""py-hello: the Python SDK's example plugin (greet, sleep, and two command hooks)."""

import asyncio

from berth_plugin import Context, Continue, InvalidInput, Plugin, Veto

plugin = Plugin("py-hello", "0.1.0")


@plugin.capability("greet")
def greet(input: dict, ctx: Context) -> dict:
    name = input.get("name", "world")
    if not isinstance(name, str):
        raise InvalidInput("name must be a string")
    return {"message": f"Hello, {name or 'world'}!"}


@plugin.capability("sleep")
async def sleep(input: dict, ctx: Context) -> dict:
    # An async handler is cancelled for real when Berth-Deadline-Ms runs out (504).
    ms = input.get("ms")
    if not isinstance(ms, int) or isinstance(ms, bool) or not 0 <= ms <= 60_000:
        raise InvalidInput("ms must be a whole number of milliseconds from 0 to 60000")
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}


@plugin.hook("before_command", mode="filter")
def before_command(event: dict, ctx: Context):
    if "rm -rf /" in str(event.get("command", "")):
        return Veto("refusing to run 'rm -rf /': it would wipe the disk")
    return Continue()


@plugin.hook("after_command", mode="observe")
def after_command(event: dict, ctx: Context) -> None:
    ctx.log.info("command finished", extra={"command": event.get("command")})


if __name__ == "__main__":
    plugin.run()
