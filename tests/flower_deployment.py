"""A Flower deployment on 127.0.0.1 for end-to-end tests: a SuperLink and SuperNodes as real
processes (each in its own process group, stopped by its PID), optionally with TLS
certificates and SuperNode authentication keys made here, and `flwr run` against them."""

import datetime
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
       "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject: str, key, issuer: str, signer, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
                critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    paths = {"ca": directory / "ca.crt", "cert": directory / "server.pem",
             "key": directory / "server.key"}
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    paths["ca"].write_bytes(certificate("fedmeta test CA", ca_key, "fedmeta test CA", ca_key,
                                        True).public_bytes(pem))
    paths["cert"].write_bytes(certificate("localhost", server_key, "fedmeta test CA", ca_key,
                                          False).public_bytes(pem))
    paths["key"].write_bytes(server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    return paths


def make_node_key(directory: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's EC key pair in OpenSSH format (private, public)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = directory / name, directory / f"{name}.pub"
    directory.mkdir(parents=True, exist_ok=True)
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH) + b"\n")
    return private, public


class Process:
    """A started process, its output in a log file; `stop` ends its whole process group."""

    def __init__(self, name: str, command: list[str], env: dict, directory: Path) -> None:
        self.name, self.log = name, directory / f"{name}.log"
        with open(self.log, "wb") as out:
            self.popen = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float, count: int = 1) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.text().count(needle) >= count:
                return True
            if self.popen.poll() is not None:
                break
            time.sleep(0.2)
        return self.text().count(needle) >= count

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the process group led by this PID; SIGKILL what is left after 15 s."""
        for signal_to_send, wait in ((sig, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.pid, signal_to_send)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            if not group_alive(self.pid):
                return
            time.sleep(1)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


class Deployment:
    """A SuperLink and SuperNodes on 127.0.0.1; use as a context manager (stops them all)."""

    def __init__(self, directory: Path, tls: bool = False, node_auth: bool = False) -> None:
        self.directory, self.node_auth = directory, node_auth
        directory.mkdir(parents=True, exist_ok=True)
        self.tls = make_certificates(directory / "certs") if tls else None
        self.env = {**os.environ, **ENV, "FLWR_HOME": str(directory / "flwr-home"),
                    "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
        self.port, self.processes = free_port(), []
        home = directory / "flwr-home"
        home.mkdir(exist_ok=True)
        security = (f'root-certificates = "{self.tls["ca"]}"' if self.tls else "insecure = true")
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "{HOST}:{self.port}"\n'
            f"{security}\n")

    def __enter__(self) -> "Deployment":
        return self

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self.processes):
            process.stop()

    def start_superlink(self) -> Process:
        security = (["--ssl-ca-certfile", str(self.tls["ca"]), "--ssl-certfile",
                     str(self.tls["cert"]), "--ssl-keyfile", str(self.tls["key"])]
                    if self.tls else ["--insecure"])
        command = [str(BIN / "flower-superlink"), *security, "--host", HOST,
                   "--port", str(self.port)]
        if self.node_auth:
            command.append("--enable-supernode-auth")
        superlink = self.start("superlink", command)
        if not superlink.wait_for("Application startup complete", 90):
            raise RuntimeError("the SuperLink did not start:\n" + superlink.text()[-3000:])
        return superlink

    def start_supernode(self, name: str, node_config: str, key: Path | None = None,
                        extra: tuple[str, ...] = ()) -> Process:
        security = (["--root-certificates", str(self.tls["ca"])] if self.tls
                    else ["--insecure"])
        command = [str(BIN / "flower-supernode"), *security, "--superlink",
                   f"{HOST}:{self.port}", "--host", HOST, "--port", str(free_port()),
                   "--node-config", node_config, *extra]
        if key is not None:
            command += ["--auth-supernode-private-key", str(key)]
        return self.start(name, command)

    def start(self, name: str, command: list[str]) -> Process:
        process = Process(name, command, self.env, self.directory)
        self.processes.append(process)
        return process

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def run(self, app: Path, run_config: str, timeout: float = 600) -> dict:
        """`flwr run` the app with `run_config` overrides; wait until the run finishes."""
        return self.wait(self.submit(app, run_config), timeout)

    def submit(self, app: Path, run_config: str) -> str:
        """`flwr run` the app with `run_config` overrides; its run id."""
        started = self.flwr("run", str(app), "test", "--run-config", run_config,
                            "--format", "json")
        reply = json.loads(started.stdout[started.stdout.index("{"):])
        if started.returncode or "run-id" not in reply:
            raise RuntimeError(f"flwr run failed: {started.stdout}\n{started.stderr}")
        return reply["run-id"]

    def wait(self, run_id: str, timeout: float = 600) -> dict:
        """The run's status once it has finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = self.flwr("ls", "test", "--run-id", str(run_id), "--format", "json")
            if listed.returncode == 0:
                status = json.loads(listed.stdout[listed.stdout.index("{"):])["runs"][0]
                if str(status["status"]).startswith("finished"):
                    return status
            time.sleep(2)
        raise TimeoutError(f"run {run_id} did not finish in {timeout} s")

    def logs(self, run_id: str) -> str:
        return self.flwr("log", str(run_id), "test", "--show").stdout
