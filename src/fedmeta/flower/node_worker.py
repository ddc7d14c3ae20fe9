"""A SuperNode's long-lived fedmeta worker. Flower 1.42 starts a fresh `flwr-clientapp`
process for every message a SuperNode receives; importing torch and fedmeta, reading the
client's file and building its learner there took most of a deployment round. So the
ClientApp (`fedmeta.flower.client_app`) imports neither: it forwards each message's content
to this worker, one per SuperNode, which keeps them loaded and answers with `node.HANDLERS`.

The first message of a node starts its worker (in a session of its own, so it outlives that
message's process); the worker serves on a Unix socket in a directory only its user may
enter, authenticated by a key in that directory (`multiprocessing.connection`'s HMAC
handshake; the frames are bytes, never pickles), and exits when the parent of the ClientApp
processes does: the SuperNode's executor, which in Flower 1.42's default (subprocess)
isolation lives and dies with the SuperNode. A node is known by that process's id, so a
restarted SuperNode gets a new worker (and a new fedmeta, if it was upgraded meanwhile).
"""

import fcntl
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from flwr.app import RecordDict
from flwr.common import serde
from flwr.proto.recorddict_pb2 import RecordDict as RecordDictProto

STARTUP_SECONDS = 120.0  # for a worker to import torch and listen, on a loaded machine
KEY_BYTES = 32


def home() -> Path:
    """The workers' directory of this user (0700): their sockets, key and logs."""
    directory = Path(tempfile.gettempdir()) / f"fedmeta-nodes-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    if directory.stat().st_uid != os.getuid() or directory.stat().st_mode & 0o077:
        raise RuntimeError(f"{directory} must belong to this user alone (mode 0700)")
    return directory


def authkey(directory: Path) -> bytes:
    """The workers' shared key (0600), made once: written to a file of its own, then linked
    into place, so no process ever reads a half-written key."""
    path = directory / "authkey"
    if not path.exists():
        with tempfile.NamedTemporaryFile(dir=directory, prefix="authkey.", delete=False) as new:
            new.write(secrets.token_bytes(KEY_BYTES))  # NamedTemporaryFile: mode 0600
        try:
            os.link(new.name, path)  # fails if another process linked its key first
        except FileExistsError:
            pass
        finally:
            os.unlink(new.name)
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise RuntimeError(f"{path} is not a fedmeta workers' key ({len(key)} bytes)")
    return key


def encode(content: RecordDict) -> bytes:
    return serde.recorddict_to_proto(content).SerializeToString()


def decode(data: bytes) -> RecordDict:
    return serde.recorddict_from_proto(RecordDictProto.FromString(data))


def forward(kind: str, content: RecordDict, node: dict[str, Any],
            supernode: int | None = None) -> RecordDict:
    """`node.HANDLERS[kind]`'s reply to `content`, from the worker of SuperNode `supernode`
    (by default this flwr-clientapp process's parent), started if it is not running. RuntimeError with the worker's message if the handler failed."""
    directory = home()
    supernode = os.getppid() if supernode is None else supernode
    address, key = str(directory / f"node-{supernode}.sock"), authkey(directory)
    connection = connect(address, key, supernode, directory)
    with connection:
        connection.send_bytes(json.dumps({"kind": kind, "node": node}).encode())
        connection.send_bytes(encode(content))
        status = json.loads(connection.recv_bytes())
        reply = connection.recv_bytes()
    if "error" in status:
        raise RuntimeError(f"fedmeta node worker: {status['error']}")
    return decode(reply)


def connect(address: str, key: bytes, supernode: int, directory: Path):
    """A connection to the worker at `address`, starting it first if none listens."""
    try:
        return Client(address, family="AF_UNIX", authkey=key)
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    lock = os.open(directory / f"node-{supernode}.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one message starts the worker; others wait
        try:
            return Client(address, family="AF_UNIX", authkey=key)
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        log = directory / f"node-{supernode}.log"
        with open(log, "ab") as out:
            worker = subprocess.Popen([sys.executable, "-m", "fedmeta.flower.node_worker",
                                       address, str(supernode)], stdin=subprocess.DEVNULL,
                                      stdout=out, stderr=out, start_new_session=True)
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                return Client(address, family="AF_UNIX", authkey=key)
            except (FileNotFoundError, ConnectionRefusedError):
                if worker.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"the fedmeta node worker did not start ({log}):\n"
                                       f"{tail}") from None
                time.sleep(0.05)
    finally:
        os.close(lock)


def started(pid: int) -> str | None:
    """When process `pid` started (its /proc stat's start time; None: no such process), so
    a reused process id is not taken for the process that had it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def exit_with(supernode: int, address: str) -> None:
    """End this process once the process `supernode` is gone (or its id belongs to another
    process), leaving only a log that says something."""
    birth = started(supernode)
    while birth is not None and supernode > 1 and started(supernode) == birth:
        time.sleep(1.0)
    for suffix in (".sock", ".lock"):
        Path(address).with_suffix(suffix).unlink(missing_ok=True)
    log = Path(address).with_suffix(".log")
    if log.exists() and not log.stat().st_size:
        log.unlink()
    os._exit(0)


def serve(address: str, supernode: int) -> None:
    """Answer the node's messages, one at a time, until its SuperNode exits."""
    from fedmeta.flower.node import HANDLERS  # torch and the data stay loaded from here on

    Path(address).unlink(missing_ok=True)  # a socket left by a killed worker
    listener = Listener(address, family="AF_UNIX", authkey=authkey(home()))
    threading.Thread(target=exit_with, args=(supernode, address), daemon=True).start()
    while True:
        try:
            with listener.accept() as connection:
                answer(connection, HANDLERS)
        except (OSError, EOFError, AuthenticationError):  # a failed handshake, or a
            continue  # ClientApp process gone mid-message: the worker serves on


def answer(connection: Connection, handlers: dict) -> None:
    """Read one request from `connection` and send the handler's reply, or its error."""
    request = json.loads(connection.recv_bytes())
    content = decode(connection.recv_bytes())
    try:
        reply, status = handlers[request["kind"]](content, request["node"]), {}
    except Exception as error:  # noqa: BLE001 (the message fails, the worker serves on)
        traceback.print_exc()  # into the worker's log
        reply, status = RecordDict(), {"error": f"{type(error).__name__}: {error}"}
    connection.send_bytes(json.dumps(status).encode())
    connection.send_bytes(encode(reply))


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
