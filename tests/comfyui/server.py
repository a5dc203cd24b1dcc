"""Start and drive a real ComfyUI server for the tests."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.comfyui.host import PACK_DIR_NAME, REPO_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    base: Path
    log_path: Path

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def run(self, graph: dict, timeout: float = 240.0) -> dict:
        answer = self.post("/prompt", {"prompt": graph, "client_id": uuid.uuid4().hex})
        prompt_id = answer["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            if self.process.poll() is not None:
                raise RuntimeError("ComfyUI exited:\n" + self.log())
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s\n" + self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start(root: Path, placeholder: Path, base: Path, checkpoint: Path, timeout: float = 180.0) -> Server:
    custom_nodes = base / "custom_nodes"
    custom_nodes.mkdir(parents=True, exist_ok=True)
    (custom_nodes / PACK_DIR_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    os.link(checkpoint, checkpoints / checkpoint.name) if checkpoint.stat().st_dev == checkpoints.stat().st_dev \
        else shutil.copy(checkpoint, checkpoints / checkpoint.name)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(placeholder)] + (
        [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])), PYTHONUNBUFFERED="1")
    log_path = base / "server.log"
    command = [sys.executable, str(root / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--base-directory", str(base), "--temp-directory", str(base / "temp"),
               "--output-directory", str(base / "output"), "--disable-auto-launch", "--disable-api-nodes"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=str(base), stdout=log, stderr=subprocess.STDOUT, env=env)
    server = Server(process, f"http://127.0.0.1:{port}", base, log_path)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError("ComfyUI server exited during startup:\n" + server.log())
        try:
            server.get("/system_stats")
            return server
        except OSError:
            time.sleep(0.5)
    server.stop()
    raise TimeoutError("ComfyUI server did not start:\n" + server.log())
