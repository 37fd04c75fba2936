"""templates/python as `berth new NAME --lang python` makes it: template files + the SDK."""

from __future__ import annotations

import re
import shutil
import signal

import pytest
from conftest import SDK_DIR, call, free_port, spawn, wait_healthy

TEMPLATE = SDK_DIR.parent.parent / "templates" / "python"


@pytest.fixture
def new_plugin(tmp_path):
    folder = tmp_path / "my-plugin"
    shutil.copytree(TEMPLATE, folder)
    shutil.copytree(SDK_DIR / "berth_plugin", folder / "berth_plugin", ignore=shutil.ignore_patterns("__pycache__"))
    for path in folder.rglob("*"):
        if path.is_file():
            text = path.read_text()
            path.write_text(text.replace("berth-template", "my-plugin"))
    return folder


def test_template_names_itself_berth_template_everywhere():
    manifest = (TEMPLATE / "berth.yaml").read_text()
    assert re.search(r"^  name: berth-template$", manifest, re.M)
    assert "image: berth/berth-template:0.1.0" in manifest
    assert 'Plugin("berth-template", "0.1.0")' in (TEMPLATE / "main.py").read_text()
    dockerfile = (TEMPLATE / "Dockerfile").read_text()
    for line in (
        "ARG PYTHON_IMAGE=python:3.12-slim",
        "FROM ${PYTHON_IMAGE}",
        "ARG BERTH_MANIFEST",
        'LABEL dev.berth.manifest="${BERTH_MANIFEST}"',
        "USER 65532:65532",
        "EXPOSE 8080",
        'ENTRYPOINT ["python3", "/app/main.py"]',
    ):
        assert line in dockerfile, line
    assert "PYTHONDONTWRITEBYTECODE=1" in dockerfile and "BERTH_PORT=8080" in dockerfile


def test_new_plugin_from_the_template_serves_its_manifest(new_plugin):
    port = free_port()
    proc = spawn(new_plugin / "main.py", port, {"PYTHONPATH": ""})
    try:
        wait_healthy(port, proc)
        d = call(port, "GET", "/v1/describe").json()
        assert d == {
            "name": "my-plugin",
            "version": "0.1.0",
            "capabilities": [{"name": "greet"}],
            "hooks": [{"name": "before_command", "mode": "filter"}],
        }
        # the manifest's examples
        assert call(port, "POST", "/v1/invoke/greet", {"name": "Berth"}).json() == {"message": "Hello, Berth!"}
        assert call(port, "POST", "/v1/invoke/greet", {}).json() == {"message": "Hello, world!"}
        hook = "/v1/hooks/before_command"
        event = {"command": "echo hello", "args": ["hello"], "cwd": "/workspace"}
        assert call(port, "POST", hook, {"event": event}).json() == {"action": "continue"}
        veto = call(port, "POST", hook, {"event": {**event, "command": "rm -rf /"}}).json()
        assert veto["action"] == "veto" and veto["reason"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    manifest = (new_plugin / "berth.yaml").read_text()
    assert "name: my-plugin" in manifest and "image: berth/my-plugin:0.1.0" in manifest
