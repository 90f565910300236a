"""Fixtures: a real `hpchain dev` cluster on free loopback ports, and
drivers configured against it.

The cluster is started once per test session and stopped (SIGTERM, then
SIGKILL after 20 s) when the session ends. Nothing here imitates the
hpchain API: every driver call reaches the real cluster.
"""

import os
import random
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

from hpchain_cinder import client as hpclient

READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20


def _terminated(signum, frame):
    # `timeout` (scripts/test-cinder.sh) sends SIGTERM: unwind like Ctrl-C,
    # so that the fixtures stop hpchain dev and the Cinder services.
    raise KeyboardInterrupt('SIGTERM')


signal.signal(signal.SIGTERM, _terminated)


def hpchain_binary():
    explicit = os.environ.get('HPCHAIN_BIN')
    if explicit:
        return explicit
    target = os.environ.get('CARGO_TARGET_DIR',
                            os.path.expanduser('~/.cache/hpchain-target'))
    return os.path.join(target, 'debug', 'hpchain')


def _port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(('127.0.0.1', port))
            return True
        except OSError:
            return False


def free_ports(offsets, low=20000, high=32000, tries=200):
    """A base port such that base + each offset is free on loopback.

    Below the kernel's ephemeral range (32768 and up), where an outgoing
    connection could take a port between this check and the bind."""
    for _ in range(tries):
        base = random.randrange(low, high - max(offsets)) // 10 * 10
        if all(_port_free(base + o) for o in offsets):
            return base
    raise RuntimeError('no free loopback port range found for offsets %s'
                       % (offsets,))


class DevCluster(object):
    """A running `hpchain dev`: api_url, token, client, iscsi portals."""

    def __init__(self, workdir):
        binary = hpchain_binary()
        if not os.access(binary, os.X_OK):
            raise RuntimeError(
                'hpchain binary %s is missing: build it with `cargo build -p '
                'hpchain` (or set HPCHAIN_BIN)' % binary)
        self.data_dir = os.path.join(workdir, 'hpchain-data')
        self.api_port = free_ports([0, 1, 10, 11, 20, 21])
        self.iscsi_port = free_ports([0, 10, 20])
        self.log_path = os.path.join(workdir, 'hpchain-dev.out')
        self._log = open(self.log_path, 'wb')
        self.proc = subprocess.Popen(
            [binary, 'dev', '--data-dir', self.data_dir,
             '--base-port', str(self.api_port),
             '--iscsi-base-port', str(self.iscsi_port)],
            stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        pidfile = os.environ.get('HPCHAIN_DEV_PIDFILE')
        if pidfile:  # for the runner's last-resort cleanup
            with open(pidfile, 'w') as f:
                f.write(str(self.proc.pid))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            with open(self.log_path, 'rb') as f:
                if b'hpchain dev: ready' in f.read():
                    break
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError('hpchain dev exited (%s) before ready; its '
                                   'output: %s' % (self.proc.returncode,
                                                   self.output()))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError('hpchain dev not ready after %ss; its '
                                   'output: %s' % (READY_TIMEOUT_S,
                                                   self.output()))
            time.sleep(0.3)
        with open(os.path.join(self.data_dir, 'api-token')) as f:
            self.token = f.read().strip()
        self.api_url = 'http://127.0.0.1:%d' % self.api_port
        self.portals = ['127.0.0.1:%d' % (self.iscsi_port + 10 * i)
                        for i in range(3)]
        self.client = hpclient.HPChainClient([self.api_url], self.token,
                                             timeout=300)

    def output(self):
        with open(self.log_path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


@pytest.fixture(scope='session')
def workdir():
    with tempfile.TemporaryDirectory(prefix='hpchain-cinder-') as d:
        yield d


@pytest.fixture(scope='session')
def cluster(workdir):
    c = DevCluster(workdir)
    try:
        yield c
    finally:
        c.stop()


def unique():
    return str(uuid.uuid4())
