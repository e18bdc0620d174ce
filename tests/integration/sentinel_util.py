"""Helpers for the Sentinel tests (test_redis_sentinel.py): Redis Sentinels
from Debian's redis-server (`redis-server FILE --sentinel`, the file
written in the test's temp dir), on kernel-chosen ports, stopped by PID;
and a set of one master, its replicas and three Sentinels (quorum 2)."""

import os
import tempfile

from harness import HOST, HarnessError, wait_until
from redis_util import REDIS_SERVER_BIN, Closed, RedisServer, Timeout, parse

DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


class Sentinel(RedisServer):
    """One Sentinel watching `masters` ({name: port}), quorum 2: a
    RedisServer started as `redis-server FILE --sentinel`."""

    def __init__(self, workdir, masters, password=None, data_password=None):
        RedisServer.__init__(self, workdir, password=password)
        self.masters = dict(masters)
        self.data_password = data_password

    def _cmd(self):
        lines = ["port %d" % self.port, "bind %s" % HOST,
                 "daemonize no", "protected-mode no",
                 "dir %s" % self.dir, "logfile %s" % self.logpath]
        if self.password:
            lines.append("requirepass %s" % self.password)
        for name, mport in self.masters.items():
            lines += ["sentinel monitor %s %s %d 2" % (name, HOST, mport),
                      "sentinel down-after-milliseconds %s %d"
                      % (name, DOWN_AFTER_MS),
                      "sentinel failover-timeout %s %d"
                      % (name, FAILOVER_TIMEOUT_MS),
                      "sentinel parallel-syncs %s 1" % name]
            if self.data_password:
                lines.append("sentinel auth-pass %s %s"
                             % (name, self.data_password))
        path = os.path.join(self.dir, "sentinel.conf")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return [REDIS_SERVER_BIN, path, "--sentinel"]

    def start(self, timeout=5.0, same_port=False):
        if not same_port:
            self.port = None      # a new port
        return RedisServer.start(self, timeout)

    def ask(self, *args):
        """One command to this Sentinel, the parsed reply."""
        return parse(self.call(*args))

    def master_port(self, name):
        r = self.ask("SENTINEL", "get-master-addr-by-name", name)
        return int(r[1]) if r else None


class SentinelSet:
    """Masters named `names` (one per shard), `replicas` replicas each, and
    three Sentinels that know them all (every replica and the other two
    Sentinels) before the test starts."""

    def __init__(self, names=("mymaster",), replicas=1, password=None,
                 data_password=None):
        self.workdir = tempfile.mkdtemp(prefix="strata-sentinel-")
        self.names = list(names)
        self.servers = {}        # port -> RedisServer
        self.sentinels = []
        try:
            self._start(replicas, password, data_password)
        except Exception:
            self.close()
            raise

    def _start(self, replicas, password, data_password):
        masters = {}
        dp = data_password
        for name in self.names:
            m = RedisServer(self.workdir, password=dp, master_password=dp).start()
            self.servers[m.port] = m
            masters[name] = m.port
            for _ in range(replicas):
                r = RedisServer(self.workdir, password=dp, replicaof=m,
                                master_password=dp).start()
                self.servers[r.port] = r
                r.wait_replica_synced()
        for _ in range(3):
            self.sentinels.append(Sentinel(self.workdir, masters,
                                           password=password,
                                           data_password=dp).start())
        self.wait_known(replicas)

    def wait_known(self, replicas, timeout=20.0):
        def known():
            try:
                return all(len(s.ask("SENTINEL", "replicas", n)) >= replicas
                           and len(s.ask("SENTINEL", "sentinels", n)) >= 2
                           for s in self.sentinels
                           if s.running() and not s.stopped
                           for n in self.names)
            except (OSError, Timeout, Closed):
                return False
        if not wait_until(known, timeout, 0.1):
            raise HarnessError("the Sentinels never learned the set")

    def master(self, name=None):
        """The RedisServer the (first running) Sentinel names as master."""
        s = next(s for s in self.sentinels if s.running() and not s.stopped)
        return self.servers[s.master_port(name or self.names[0])]

    def replicas_of(self, master):
        return [r for r in self.servers.values()
                if r is not master and r.running()]

    def failover(self, name=None, via=None):
        s = via or next(s for s in self.sentinels
                        if s.running() and not s.stopped)
        assert s.ask("SENTINEL", "failover", name or self.names[0]) == "OK"

    def wait_new_master(self, old_port, name=None, timeout=30.0):
        """The new master once every running Sentinel names one other
        than old_port and it says ROLE master."""
        def moved():
            try:
                ports = set(s.master_port(name or self.names[0])
                            for s in self.sentinels
                            if s.running() and not s.stopped)
                if len(ports) != 1 or old_port in ports:
                    return False
                m = self.servers[ports.pop()]
                return parse(m.call("ROLE"))[0] == b"master"
            except (OSError, Timeout, Closed, KeyError):
                return False
        if not wait_until(moved, timeout, 0.05):
            raise HarnessError("no failover within %.0f s" % timeout)
        return self.master(name)

    def pool(self, **kw):
        body = {"redis": True, "timeout": 1000, "auto_eject_hosts": False,
                "sentinels": [s.addr for s in self.sentinels]}
        if len(self.names) == 1:
            body["master_name"] = self.names[0]
        else:
            body["master_names"] = list(self.names)
        body.update(kw)
        return body

    def close(self):
        for s in self.sentinels:
            s.stop()
        for r in self.servers.values():
            r.stop()
