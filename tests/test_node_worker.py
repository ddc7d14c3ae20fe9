"""A SuperNode's long-lived worker (`fedmeta.flower.node_worker`): started by the first
message, it answers the node's messages with the node's handlers, one process for all of
them, and exits with its SuperNode (here a `sleep` standing in for it)."""

import subprocess
import time
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, RecordDict

from fedmeta.config import Config
from fedmeta.flower.node import describe
from fedmeta.flower.node_worker import forward, home


def worker_pids(supernode: int) -> list[int]:
    socket = str(home() / f"node-{supernode}.sock")
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and socket in read_cmdline(p)]


def read_cmdline(process: Path) -> str:
    try:
        return (process / "cmdline").read_text()
    except OSError:
        return ""


def test_one_worker_answers_a_nodes_messages_and_exits_with_its_supernode(client_files):
    files, _, _ = client_files
    node = {"data-path": str(files[1])}
    content = RecordDict({"config": ConfigRecord({"fedmeta": Config().model_dump_json()})})
    supernode = subprocess.Popen(["sleep", "120"])
    try:
        first = forward("describe", content, node, supernode.pid)
        (worker,) = worker_pids(supernode.pid)
        again = forward("describe", content, node, supernode.pid)
        assert worker_pids(supernode.pid) == [worker]  # the same process answered
        expected = describe(content, node)["node"]
        assert dict(first["node"]) == dict(again["node"]) == dict(expected)
        with pytest.raises(RuntimeError, match="fedmeta node worker: KeyError"):
            forward("no such handler", content, node, supernode.pid)
    finally:
        supernode.kill()
        supernode.wait()
    deadline = time.monotonic() + 10
    while worker_pids(supernode.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not worker_pids(supernode.pid)
    log = home() / f"node-{supernode.pid}.log"  # all that is left: what went wrong
    assert list(home().glob(f"node-{supernode.pid}.*")) == [log]
    assert "KeyError: 'no such handler'" in log.read_text()
    log.unlink()
