"""The berth-template plugin: one capability (greet) and one filter hook (before_command).

Run it here with `python3 main.py` (it listens on $BERTH_PORT, 8080 by default), build it
with `berth build .`, and check it with `berth plugin test berth/berth-template:0.1.0`.
berth_plugin/ is the Berth Python SDK (standard library only).
"""

from berth_plugin import Context, Continue, InvalidInput, Plugin, Veto

# Must equal berth.yaml's metadata.name and spec.version.
plugin = Plugin("berth-template", "0.1.0")


@plugin.capability("greet")
def greet(input: dict, ctx: Context) -> dict:
    name = input.get("name", "world")
    if not isinstance(name, str):
        raise InvalidInput("name must be a string")
    return {"message": f"Hello, {name}!"}


@plugin.hook("before_command", mode="filter")
def before_command(event: dict, ctx: Context):
    # event: {"command": str, "args": [str], "cwd": str}
    if "rm -rf /" in str(event.get("command", "")):
        return Veto("refusing to run 'rm -rf /': it would wipe the disk")
    return Continue()


if __name__ == "__main__":
    plugin.run()
