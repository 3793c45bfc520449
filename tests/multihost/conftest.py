"""Hosts as network namespaces on this machine (docs/multihost.md, "Several hosts and failures").

A bridge in the root namespace holds ``10.X.Y.1``, the only address this module's own
PostgreSQL, Redis and S3 server (moto) listen on. Each host is a network namespace with one
veth leg on the bridge: ``web`` (the job starter and Celery beat), ``worker1`` and ``worker2``
(one gpu-queue Celery worker each). Hosts share no files: each has its own data dir, and
images, checkpoints and embeddings are in the bucket. The machine's own PostgreSQL (5432) and
Redis (6379) are never touched: the servers here run on other ports, bound to the bridge.

Everything started here is stopped by its fixture's finalizer, also when a test fails: the
processes of each namespace by ``ip netns pids``, the servers by the pids started, then the
namespaces, veths and the bridge. Leftovers of a run that was itself killed (its pid in the
namespace name is gone) are removed before a new network is made.
"""

from __future__ import annotations

import contextlib
import glob
import io
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.services import missing

ROOT = Path(__file__).resolve().parents[2]
#: Namespace names are ``maskloop-mh-<pid of the test run>-<host>``.
NAMESPACE_PREFIX = "maskloop-mh"
BUCKET = "maskloop-multihost"
KEYS = {"AWS_ACCESS_KEY_ID": "multihost-key", "AWS_SECRET_ACCESS_KEY": "multihost-secret"}
#: A job quiet this long has its unfinished chunks re-sent (production: 600 s). One image of
#: the tests' size takes well under a second; 8 s leaves room for a loaded machine.
REDISPATCH_SECONDS = 8
#: Beat sends the reconciler this often (production: 60 s).
RECONCILE_SECONDS = 2
#: Images per chunk task: 24 images make 6 chunks, so both workers get several, and a chunk
#: lasts long enough (about 2 s) to act in the middle of one.
CHUNK = 4
#: Seconds a worker may take to start (Django, torch and the engine imported at nice 19 on a
#: busy 2-core machine).
WORKER_START_SECONDS = 240


def sh(*args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=120, **kwargs)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def postgres_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: int(re.findall(r"/(\d+)/bin/", path)[0]),
    )
    return candidates[-1] if candidates else None


def require_hosts() -> None:
    """Skip (outside CI) or fail (CI=true) naming what is missing (DECISIONS 9)."""
    if os.geteuid() != 0:
        missing("root (network namespaces and veth pairs need it)", "run the tests as root")
    if shutil.which("ip") is None:
        missing("ip netns (iproute2)", "install it with: apt-get install iproute2")
    probe = f"{NAMESPACE_PREFIX}-probe-{os.getpid()}"
    added = sh("ip", "netns", "add", probe, check=False)
    if added.returncode != 0:
        missing("ip netns", f"`ip netns add` failed here ({added.stderr.strip()}); run as root")
    sh("ip", "netns", "del", probe, check=False)
    for name in ("initdb", "pg_ctl"):
        if postgres_binary(name) is None:
            missing(f"PostgreSQL's {name}", "install it with: apt-get install postgresql")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        missing("the postgres user", "install it with: apt-get install postgresql")
    if shutil.which("redis-server") is None:
        missing("redis-server", "install it with: apt-get install redis-server")


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------- hosts


@dataclass
class Host:
    """A network namespace with one address on the bridge and a data dir of its own."""

    name: str
    netns: str
    leg: str
    address: str
    data_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *args]

    def start(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            process = subprocess.Popen(
                self.command(args),
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def run(
        self, args: list[str], env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )

    def pids(self) -> list[int]:
        listed = sh("ip", "netns", "pids", self.netns, check=False).stdout
        return [int(pid) for pid in listed.split()]

    def kill(self) -> None:
        """SIGKILL every process of the host, as when the machine is lost."""
        kill_namespace(self.netns)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        self.processes.clear()


def kill_namespace(netns: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        listed = sh("ip", "netns", "pids", netns, check=False).stdout.split()
        if not listed:
            return
        for pid in listed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {listed} of {netns} survive SIGKILL")
        time.sleep(0.05)


def remove_leftovers() -> None:
    """What earlier runs left when their test process was killed before its finalizers ran:
    namespaces (and their bridge), PostgreSQL clusters and Redis servers. Each carries the
    pid of its test process in its name; only those whose process is gone are removed."""
    dead: set[int] = set()
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        found = re.match(rf"({NAMESPACE_PREFIX}-(\d+)-\S+)", line)
        if found is None or alive(int(found.group(2))):
            continue
        kill_namespace(found.group(1))
        sh("ip", "netns", "del", found.group(1), check=False)
        dead.add(int(found.group(2)))
    links = sh("ip", "-o", "link", "show", check=False).stdout
    for pid in dead:
        # The root-side veth legs and the bridge (a leg can outlive its namespace a while).
        for leg in re.findall(rf"^\d+: (mlv{pid % 100000:05d}\d)[@:]", links, re.MULTILINE):
            sh("ip", "link", "del", leg, check=False)
        sh("ip", "link", "del", bridge_name(pid), check=False)
    for folder in Path(tempfile.gettempdir()).glob(f"{NAMESPACE_PREFIX}-*-*-*"):
        found = re.match(rf"{NAMESPACE_PREFIX}-(pg|redis)-(\d+)-", folder.name)
        if found is None or alive(int(found.group(2))):
            continue
        if found.group(1) == "pg":
            Postgres.stop_cluster(folder)
        else:
            Redis.stop_server(folder)
        shutil.rmtree(folder, ignore_errors=True)


def bridge_name(pid: int) -> str:
    return f"mlbr{pid % 100000:05d}"  # interface names have at most 15 characters


class Network:
    """The bridge and the hosts on it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pid = os.getpid()
        self.bridge = bridge_name(self.pid)
        self.prefix = self._free_subnet()
        self.gateway = f"{self.prefix}.1"
        self.hosts: dict[str, Host] = {}

    @staticmethod
    def _free_subnet() -> str:
        used = sh("ip", "-o", "-4", "addr", "show").stdout
        start = os.getpid() % 200
        for step in range(250):
            prefix = f"10.213.{(start + step) % 250 + 1}"
            if f" {prefix}." not in used:
                return prefix
        raise RuntimeError("no free 10.213.x.0/24 subnet for the test hosts")

    def up(self) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    def add_host(self, name: str) -> Host:
        index = len(self.hosts) + 2
        host = Host(
            name=name,
            netns=f"{NAMESPACE_PREFIX}-{self.pid}-{name}",
            leg=f"mlv{self.pid % 100000:05d}{index}",
            address=f"{self.prefix}.{index}",
            data_dir=self.root / name,
        )
        host.data_dir.mkdir(parents=True)
        self.hosts[name] = host
        inner = f"{host.leg}p"
        sh("ip", "netns", "add", host.netns)
        sh("ip", "link", "add", host.leg, "type", "veth", "peer", "name", inner)
        sh("ip", "link", "set", inner, "netns", host.netns)
        sh("ip", "link", "set", host.leg, "master", self.bridge)
        sh("ip", "link", "set", host.leg, "up")
        sh("ip", "-n", host.netns, "link", "set", inner, "name", "eth0")
        sh("ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        sh("ip", "-n", host.netns, "link", "set", "eth0", "up")
        sh("ip", "-n", host.netns, "link", "set", "lo", "up")
        return host

    def down(self) -> None:
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                host.kill()
            sh("ip", "link", "del", host.leg, check=False)
            sh("ip", "netns", "del", host.netns, check=False)
        sh("ip", "link", "del", self.bridge, check=False)


# ------------------------------------------------------------------------------ services


class Postgres:
    """A PostgreSQL cluster of its own (initdb / pg_ctl as the postgres user)."""

    def __init__(self, address: str, subnet: str) -> None:
        self.address = address
        self.subnet = subnet
        self.port = free_port(address)
        # Under /tmp, not pytest's tmp_path: the postgres user must be able to reach it.
        self.folder = Path(tempfile.mkdtemp(prefix=f"{NAMESPACE_PREFIX}-pg-{os.getpid()}-"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgres://postgres@{self.address}:{self.port}/maskloop"

    def _as_postgres(self, *args: str) -> subprocess.CompletedProcess[str]:
        return sh(*args, user="postgres", group="postgres", extra_groups=[], cwd=self.folder)

    def start(self) -> None:
        shutil.chown(self.folder, "postgres", "postgres")
        initdb = postgres_binary("initdb")
        assert initdb is not None
        self._as_postgres(
            initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "-N"
        )
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.subnet}.0/24 trust\n")
        self._start()
        import psycopg

        url = f"postgres://postgres@{self.address}:{self.port}/postgres"
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as connection:
            connection.execute("CREATE DATABASE maskloop")

    def _pg_ctl(self, *args: str) -> None:
        pg_ctl = postgres_binary("pg_ctl")
        assert pg_ctl is not None
        self._as_postgres(pg_ctl, "-D", str(self.data), "-w", "-t", "120", *args)

    def _start(self) -> None:
        # The server's output goes to its log (-l): a pipe to pg_ctl would stay open.
        options = (
            f"-c listen_addresses={self.address} -p {self.port} -k {self.folder} "
            "-c fsync=off -c full_page_writes=off"
        )
        self._pg_ctl("start", "-o", options, "-l", str(self.log))

    def restart(self) -> None:
        """Stop at once (clients cut off, transactions in flight lost, crash recovery at the
        next start), then start again."""
        self._pg_ctl("stop", "-m", "immediate")
        self._start()

    def stop(self) -> None:
        self.stop_cluster(self.folder)
        shutil.rmtree(self.folder, ignore_errors=True)

    @staticmethod
    def stop_cluster(folder: Path) -> None:
        pg_ctl = postgres_binary("pg_ctl")
        if pg_ctl is not None and (folder / "data" / "postmaster.pid").exists():
            stop = [pg_ctl, "-D", str(folder / "data"), "-w", "-t", "60", "stop", "-m", "immediate"]
            sh(*stop, check=False, user="postgres", group="postgres", extra_groups=[], cwd="/")


class Redis:
    """A Redis of its own that keeps nothing on disk: a restart loses every message."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.port = free_port(address)
        self.folder = Path(tempfile.mkdtemp(prefix=f"{NAMESPACE_PREFIX}-redis-{os.getpid()}-"))
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int) -> str:
        return f"redis://{self.address}:{self.port}/{db}"

    def start(self) -> None:
        with (self.folder / "redis.log").open("ab") as out:
            self.process = subprocess.Popen(
                ["redis-server", "--bind", self.address, "--port", str(self.port)]
                + ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
                + ["--dir", str(self.folder), "--pidfile", str(self.folder / "redis.pid")],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self.ping, 30, "Redis to answer")

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.address, self.port), 1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def client(self, db: int = 0) -> Any:
        import redis

        return redis.Redis(host=self.address, port=self.port, db=db, socket_timeout=5)

    def restart(self) -> None:
        """SIGKILL, then a new, empty server on the same address."""
        self.kill()
        self.start()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    @staticmethod
    def stop_server(folder: Path) -> None:
        with contextlib.suppress(OSError, ValueError):
            pid = int((folder / "redis.pid").read_text())
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"redis-server"):
                os.kill(pid, signal.SIGKILL)


class S3:
    """moto's S3 server in this process, listening on the bridge only."""

    def __init__(self, address: str) -> None:
        from moto.server import ThreadedMotoServer

        self.address = address
        self.port = free_port(address)
        self.server = ThreadedMotoServer(ip_address=address, port=self.port, verbose=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}:{self.port}"

    def start(self) -> None:
        import boto3

        # Its request log (werkzeug) would fill the report of a failing test.
        self.quiet = logging.getLogger("werkzeug")
        self.level = self.quiet.level
        self.quiet.setLevel(logging.WARNING)
        self.server.start()
        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", **_keys())
        client.create_bucket(Bucket=BUCKET)

    def stop(self) -> None:
        self.server.stop()
        self.quiet.setLevel(self.level)


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": KEYS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": KEYS["AWS_SECRET_ACCESS_KEY"],
    }


# ------------------------------------------------------------------------------- cluster


LABELLED = re.compile(r"automatic stage: job (\d+) chunk (\d+) labelled image (\d+)")
STARTED = re.compile(r"automatic stage: job (\d+) chunk (\d+) started")


class Cluster:
    """The hosts, the servers they reach over the bridge, and what the tests ask of them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.network = Network(root)
        self.postgres: Postgres | None = None
        self.redis: Redis | None = None
        self.s3: S3 | None = None
        self.workers: list[Host] = []

    # -- setting up

    def up(self) -> None:
        remove_leftovers()
        self.network.up()
        self.web = self.network.add_host("web")
        self.workers = [self.network.add_host("worker1"), self.network.add_host("worker2")]
        gateway = self.network.gateway
        self.postgres = Postgres(gateway, self.network.prefix)
        self.postgres.start()
        self.redis = Redis(gateway)
        self.redis.start()
        self.s3 = S3(gateway)
        self.s3.start()
        migrated = self.web.run(
            [sys.executable, "manage.py", "migrate", "--no-input"], self.env(self.web), 600
        )
        assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
        self.web.start(
            [sys.executable, "-m", "celery", "-A", "annotator", "beat", "--loglevel", "INFO"]
            + ["--schedule", str(self.web.data_dir / "celerybeat-schedule")],
            self.env(self.web),
            self.log(self.web, "beat"),
        )

    def down(self) -> None:
        self.network.down()  # every process of every host first
        if self.s3 is not None:
            self.s3.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def env(self, host: Host) -> dict[str, str]:
        """A host's whole environment: nothing inherited from this machine's (no DATABASE_URL
        of its services, no proxies), the servers by their bridge address."""
        assert self.postgres is not None and self.redis is not None and self.s3 is not None
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(host.data_dir),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "DJANGO_SETTINGS_MODULE": "annotator.settings",
            "MASKLOOP_DATA_DIR": str(host.data_dir),
            "SECRET_KEY": "multihost-test-secret-key-" + "x" * 40,
            "DATABASE_URL": self.postgres.url,
            "CELERY_BROKER_URL": self.redis.url(0),
            "REDIS_URL": self.redis.url(1),
            "MASKLOOP_S3_BUCKET": BUCKET,
            "MASKLOOP_S3_PREFIX": "media",
            "AWS_S3_ENDPOINT_URL": self.s3.endpoint,
            "AWS_S3_REGION_NAME": "us-east-1",
            **KEYS,
            "MASKLOOP_STARTER_CHECKPOINT": "none",
            "MASKLOOP_TORCH_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MASKLOOP_AUTOMATIC_CHUNK": str(CHUNK),
            "MASKLOOP_JOB_REDISPATCH_SECONDS": str(REDISPATCH_SECONDS),
            "MASKLOOP_JOB_RECONCILE_SECONDS": str(RECONCILE_SECONDS),
        }

    def log(self, host: Host, name: str) -> Path:
        return host.data_dir / f"{name}.log"

    # -- workers

    def worker_running(self, host: Host) -> bool:
        return any(process.poll() is None for process in host.processes)

    def start_workers(self) -> None:
        """A gpu-queue worker on every worker host that has none running (a killed host is
        started again), as deployed: --pool solo, one task at a time."""
        starting = []
        for host in self.workers:
            if self.worker_running(host):
                continue
            log = self.log(host, "worker")
            offset = log.stat().st_size if log.exists() else 0
            host.start(
                [sys.executable, "-m", "celery", "-A", "annotator", "worker", "--pool", "solo"]
                + ["--queues", "gpu,cpu", "--hostname", f"{host.name}@%h", "--loglevel", "INFO"]
                + ["--without-gossip", "--without-mingle", "--without-heartbeat"],
                self.env(host),
                log,
            )
            starting.append((host, log, offset))
        for host, log, offset in starting:
            wait_until(
                lambda host=host, log=log, offset=offset: self._ready(host, log, offset),
                WORKER_START_SECONDS,
                f"the worker on {host.name} to start",
                interval=0.5,
            )

    def _ready(self, host: Host, log: Path, offset: int) -> bool:
        if not self.worker_running(host):
            raise AssertionError(f"the worker on {host.name} exited:\n{tail(log)}")
        with log.open("rb") as handle:
            handle.seek(offset)
            return b" ready." in handle.read()

    def labelled(self, host: Host, job: int) -> list[tuple[int, int]]:
        """(chunk, image) pairs the host's worker stored for the job, from its log."""
        text = self.log(host, "worker").read_text(errors="replace")
        return [
            (int(chunk), int(image))
            for job_id, chunk, image in LABELLED.findall(text)
            if int(job_id) == job
        ]

    def started_chunks(self, host: Host, job: int) -> list[int]:
        text = self.log(host, "worker").read_text(errors="replace")
        return [int(chunk) for job_id, chunk in STARTED.findall(text) if int(job_id) == job]

    # -- the job, from the web host

    def start_job(self, name: str, images: int = 24) -> dict[str, Any]:
        """Make a project of ``images`` images in the bucket with a tiny model version, and
        start an automatic-stage job over them through the engine, on the web host."""
        import json

        done = self.web.run(
            [sys.executable, "-m", "tests.multihost.starter", "--name", name]
            + ["--images", str(images)],
            self.env(self.web),
            600,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    # -- reading the database (from the root namespace, over the bridge)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of a query on a fresh connection; waits out a restarting database."""
        import psycopg

        assert self.postgres is not None
        deadline = time.monotonic() + 120
        while True:
            try:
                with psycopg.connect(self.postgres.url, connect_timeout=3) as connection:
                    return list(connection.execute(sql, params).fetchall())
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def job(self, job_id: int) -> dict[str, Any]:
        state, message, result, params = self.query(
            "SELECT state, message, result, params FROM annotator_job WHERE id = %s", job_id
        )[0]
        return {"state": state, "message": message, "result": result, "params": params}

    def wait_for_job(self, job_id: int, timeout: float = 240) -> dict[str, Any]:
        return dict(
            wait_until(
                lambda: (job := self.job(job_id))["state"] not in ("queued", "running") and job,
                timeout,
                f"job {job_id} to end:\n{self.logs()}",
                interval=0.5,
            )
        )

    def logs(self) -> str:
        parts = []
        for host in [self.web, *self.workers]:
            for log in sorted(host.data_dir.glob("*.log")):
                parts.append(f"--- {host.name}/{log.name}\n{tail(log)}")
        return "\n".join(parts)


def tail(path: Path, size: int = 3000) -> str:
    if not path.exists():
        return "(no log)"
    with path.open("rb") as handle:
        handle.seek(0, io.SEEK_END)
        handle.seek(max(0, handle.tell() - size))
        return handle.read().decode(errors="replace")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_hosts()
    cluster = Cluster(tmp_path_factory.mktemp("hosts"))
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def workers(cluster: Cluster) -> list[Host]:
    """Both worker hosts with a running worker (one killed by an earlier test is restarted)."""
    cluster.start_workers()
    return cluster.workers
