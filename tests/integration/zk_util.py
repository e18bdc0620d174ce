"""Helpers for the ZooKeeper integration tests (test_zk.py).

A real ZooKeeper server (Debian's `zookeeper` package: the jars in
/usr/share/java, run by `java`) on a kernel-chosen loopback port with a
temporary data directory, stopped by PID; never a system service.  A
minimal ZooKeeper wire-protocol client (create, get, set, delete,
children), so that the tests need no Python package beyond the standard
library.  Every socket read has a deadline.
"""

import base64
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import time

from harness import (HOST, HarnessError, _stop_popen, free_port,
                     port_accepts, wait_until)

JAVA_BIN = os.environ.get("JAVA_BIN") or shutil.which("java") or "/usr/bin/java"
ZK_JAR = os.environ.get("ZOOKEEPER_JAR") or "/usr/share/java/zookeeper.jar"
# ZooKeeper's tick: sessions may last 2..20 ticks (1..10 s here).
TICK_MS = 500


def zookeeper_missing():
    """None when a ZooKeeper server can be run here, else why not."""
    if not os.access(JAVA_BIN, os.X_OK):
        return "java not installed (Debian package default-jre-headless)"
    if not os.path.isfile(ZK_JAR):
        return "ZooKeeper jars not installed (Debian package zookeeper)"
    return None


def strata_without_zookeeper(strata_bin):
    """True if the binary was built without ZooKeeper support."""
    r = subprocess.run([strata_bin, "--publish", "/dev/null", "-c",
                        "zk://127.0.0.1:1/x"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=10, universal_newlines=True)
    return "without ZooKeeper support" in r.stderr


# --------------------------------------------------------------- server ----

class ZooKeeperServer:
    """One standalone ZooKeeper server on 127.0.0.1."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.datadir = os.path.join(workdir, "zk-data")
        self.port = None
        self.proc = None
        self.logpath = os.path.join(workdir, "zookeeper.log")

    @property
    def hosts(self):
        return "%s:%d" % (HOST, self.port)

    def url(self, path):
        return "zk://%s%s" % (self.hosts, path)

    def _write_cfg(self):
        cfg = os.path.join(self.workdir, "zoo.cfg")
        with open(cfg, "w") as f:
            f.write("tickTime=%d\n" % TICK_MS)
            f.write("dataDir=%s\n" % self.datadir)
            f.write("clientPort=%d\n" % self.port)
            f.write("clientPortAddress=%s\n" % HOST)
            f.write("admin.enableServer=false\n")
            f.write("4lw.commands.whitelist=ruok\n")
            f.write("maxClientCnxns=0\n")
        return cfg

    def ruok(self):
        """True once the server answers ruok and takes a session (ruok
        answers before the database is loaded)."""
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as s:
                s.settimeout(0.5)
                s.sendall(b"ruok")
                if s.recv(4) != b"imok":
                    return False
            ZkClient(HOST, self.port, timeout=1.0).close()
            return True
        except (OSError, HarnessError):
            return False

    def start(self, timeout=30.0):
        """Starts the server (on its old port after stop()); waits until it
        answers ruok."""
        os.makedirs(self.datadir, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        cfg = self._write_cfg()
        log = open(self.logpath, "ab")
        try:
            self.proc = subprocess.Popen(
                [JAVA_BIN, "-Xmx256m", "-XX:+UseSerialGC",
                 "-XX:TieredStopAtLevel=1",
                 "-Dzookeeper.admin.enableServer=false",
                 "-cp", ZK_JAR,
                 "org.apache.zookeeper.server.ZooKeeperServerMain", cfg],
                stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        finally:
            log.close()
        if not wait_until(lambda: self.proc.poll() is not None or self.ruok(),
                          timeout, 0.1) or self.proc.poll() is not None:
            self.stop()
            raise HarnessError("ZooKeeper did not start on port %d:\n%s"
                               % (self.port, self.read_log()))
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """Stops the server by PID; waits until its port is closed."""
        if self.proc is not None:
            _stop_popen(self.proc, grace=5.0)
        if self.port is not None:
            wait_until(lambda: not port_accepts(self.port), 5.0, 0.05)

    def ensure_running(self):
        if not self.running():
            self.start()

    def read_log(self, limit=4000):
        try:
            with open(self.logpath, "rb") as f:
                return f.read()[-limit:].decode("utf-8", "replace")
        except OSError:
            return ""

    def client(self):
        return ZkClient(HOST, self.port)


# --------------------------------------------------------------- client ----

OP_CREATE, OP_DELETE, OP_EXISTS, OP_GET, OP_SET, OP_CHILDREN = 1, 2, 3, 4, 5, 8
OP_GET_ACL, OP_AUTH, AUTH_XID = 6, 100, -4
OP_CLOSE = -11
ZNONODE, ZNODEEXISTS, ZBADVERSION, ZNOAUTH = -101, -110, -103, -102
EPHEMERAL = 1
# (perms, scheme, id): ZooKeeper's permission bits, READ 1 .. ADMIN 16
OPEN_ACL = [(31, "world", "anyone")]


def digest_id(user, password):
    """The id a digest ACL names for user:password (as zkCli's addauth)."""
    sha = hashlib.sha1(("%s:%s" % (user, password)).encode()).digest()
    return "%s:%s" % (user, base64.b64encode(sha).decode())


class ZkError(Exception):
    def __init__(self, code, op, path):
        Exception.__init__(self, "ZooKeeper error %d on %s %s"
                           % (code, op, path))
        self.code = code


class Stat:
    FMT = ">qqqqiiiqiiq"

    def __init__(self, raw):
        (self.czxid, self.mzxid, self.ctime, self.mtime, self.version,
         self.cversion, self.aversion, self.ephemeral_owner,
         self.data_length, self.num_children, self.pzxid) = raw


def _string(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">i", len(b)) + b


def _buffer(b):
    if b is None:
        return struct.pack(">i", -1)
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">i", len(b)) + b


class _Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def buffer(self):
        (n,) = self.take(">i")
        if n < 0:
            return None
        v = self.data[self.pos:self.pos + n]
        self.pos += n
        return v

    def stat(self):
        return Stat(self.take(Stat.FMT))


class ZkClient:
    """A synchronous client with one session, for short test steps."""

    def __init__(self, host, port, timeout=5.0, session_ms=10000):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.xid = 0
        req = struct.pack(">iqiq", 0, 0, session_ms, 0) + _buffer(b"\0" * 16) \
            + b"\0"
        self._send(req)
        r = _Reader(self._recv())
        _, _, self.session_id = r.take(">iiq")

    def close(self):
        try:
            self._call(OP_CLOSE, b"", "close", "")
        except (OSError, ZkError, HarnessError):
            pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def _send(self, payload):
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)

    def _recv_exact(self, n):
        buf = b""
        deadline = time.monotonic() + self.timeout
        while len(buf) < n:
            if time.monotonic() > deadline:
                raise HarnessError("ZooKeeper reply timed out")
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise HarnessError("ZooKeeper closed the connection")
            buf += chunk
        return buf

    def _recv(self):
        (n,) = struct.unpack(">i", self._recv_exact(4))
        return self._recv_exact(n)

    def _call(self, op, body, name, path):
        self.xid += 1
        self._send(struct.pack(">ii", self.xid, op) + body)
        while True:
            r = _Reader(self._recv())
            xid, _, err = r.take(">iqi")
            if xid == self.xid:
                break  # watch events (-1) and pings (-2) are skipped
        if err != 0:
            raise ZkError(err, name, path)
        return r

    def get(self, path):
        """(data bytes, Stat)"""
        r = self._call(OP_GET, _string(path) + b"\0", "get", path)
        data = r.buffer()
        return data or b"", r.stat()

    def exists(self, path):
        try:
            r = self._call(OP_EXISTS, _string(path) + b"\0", "exists", path)
        except ZkError as e:
            if e.code == ZNONODE:
                return None
            raise
        return r.stat()

    def children(self, path):
        r = self._call(OP_CHILDREN, _string(path) + b"\0", "children", path)
        (n,) = r.take(">i")
        return sorted(r.buffer().decode() for _ in range(max(n, 0)))

    def add_auth(self, user, password):
        """Authenticates this session as the digest identity user."""
        auth = ("%s:%s" % (user, password)).encode()
        self._send(struct.pack(">ii", AUTH_XID, OP_AUTH) + struct.pack(">i", 0)
                   + _string("digest") + _buffer(auth))
        while True:
            xid, _, err = _Reader(self._recv()).take(">iqi")
            if xid == AUTH_XID:
                break
        if err != 0:
            raise ZkError(err, "auth", user)

    def create(self, path, data=b"", flags=0, parents=True, acl=None):
        if parents:
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                try:
                    self.create("/" + "/".join(parts[:i]), parents=False,
                                acl=acl)
                except ZkError as e:
                    if e.code != ZNODEEXISTS:
                        raise
        entries = acl or OPEN_ACL
        raw = struct.pack(">i", len(entries)) + b"".join(
            struct.pack(">i", perms) + _string(scheme) + _string(ident)
            for perms, scheme, ident in entries)
        body = _string(path) + _buffer(data) + raw + struct.pack(">i", flags)
        self._call(OP_CREATE, body, "create", path)

    def get_acl(self, path):
        """[(perms, scheme, id)] of the node."""
        r = self._call(OP_GET_ACL, _string(path), "get_acl", path)
        (n,) = r.take(">i")
        out = []
        for _ in range(max(n, 0)):
            (perms,) = r.take(">i")
            scheme = r.buffer().decode()
            out.append((perms, scheme, r.buffer().decode()))
        return out

    def set(self, path, data, version=-1):
        body = _string(path) + _buffer(data) + struct.pack(">i", version)
        return self._call(OP_SET, body, "set", path).stat()

    def put(self, path, data):
        """set, creating the node (and parents) when missing."""
        try:
            return self.set(path, data)
        except ZkError as e:
            if e.code != ZNONODE:
                raise
        self.create(path, data)
        return self.exists(path)

    def delete(self, path, version=-1):
        body = _string(path) + struct.pack(">i", version)
        self._call(OP_DELETE, body, "delete", path)
