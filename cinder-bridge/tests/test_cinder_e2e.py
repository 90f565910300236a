"""End to end through real Cinder services.

cinder-api (noauth), cinder-scheduler and cinder-volume (Cinder 29.0.0 from
PyPI) with RabbitMQ from Debian and sqlite, on loopback, brought up by
../shared/tools/cinder/setup.sh with this driver as the backend and torn
down by teardown.sh. The test drives them with python-cinderclient and
checks each step in hpchain through its API; the attach step logs in with
libiscsi's iscsi-inq and writes and reads with qemu-img using the
connection info Cinder returned.

Runs when HPCHAIN_CINDER_E2E=1 (scripts/test-cinder.sh sets it), with the
python of the venv setup.sh uses (cinder and this driver installed).
"""

import os
import subprocess
import sys
import time

import pytest

from conftest import free_ports, unique

GiB = 1 << 30
PROJECT = '0e2e0000000000000000000000000001'
HOST_IQN = 'iqn.2026-11.io.hpchain.test:e2e-host'
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
TOOLS = os.environ.get('HPCHAIN_CINDER_TOOLS',
                       os.path.join(REPO, '..', 'shared', 'tools', 'cinder'))
SETUP_TIMEOUT_S = 400
STEP_TIMEOUT_S = 300
EXPORT_APPLY_S = 10

pytestmark = pytest.mark.skipif(
    os.environ.get('HPCHAIN_CINDER_E2E') != '1',
    reason='needs real Cinder services: run scripts/test-cinder.sh (sets '
           'HPCHAIN_CINDER_E2E=1)')


class Cinder(object):
    """A running Cinder deployment and a client to it."""

    def __init__(self, cluster, workdir):
        self.run_dir = os.environ.get('HPCHAIN_CINDER_RUN_DIR',
                                      os.path.join(workdir, 'cinder-run'))
        api_port = free_ports([0])
        rabbit = free_ports([0, 1, 2])
        self.env = dict(os.environ)
        self.env.update({
            'ANCHOR_DIR': os.environ.get(
                'HPCHAIN_CINDER_ANCHOR',
                os.path.expanduser('~/.cache/hpchain-cinder-anchor')),
            'VENV': sys.prefix,
            'RUN_DIR': self.run_dir,
            'API_PORT': str(api_port),
            'RABBIT_PORT': str(rabbit),
            'RABBIT_DIST_PORT': str(rabbit + 1),
            'EPMD_PORT': str(rabbit + 2),
            'VOLUME_DRIVER': 'hpchain_cinder.driver.HPChainISCSIDriver',
            'BACKEND': 'hpchain',
            'DRIVER_PIP': '',
            'BACKEND_OPTS': '\n'.join([
                'volume_backend_name = hpchain',
                'hpchain_api_url = %s' % cluster.api_url,
                'hpchain_api_token_file = %s'
                % os.path.join(cluster.data_dir, 'api-token'),
                'hpchain_pool = rbd',
            ]),
        })
        # Three services write one sqlite file; pysqlite waits only 5 s for
        # a lock, which a loaded machine exceeds ("database is locked", an
        # HTTP 500 from cinder-api). A second config file (read after
        # setup.sh's) gives the same database a 60 s busy timeout.
        extra = os.path.join(workdir, 'cinder-extra.conf')
        with open(extra, 'w') as f:
            f.write('[database]\nconnection = sqlite:///%s/cinder.sqlite'
                    '?timeout=60\n' % self.run_dir)
        self.env['EXTRA_CONFIG'] = extra
        self.setup_log = os.path.join(workdir, 'cinder-setup.out')
        # Cinder's services can also fail at start with "database is
        # locked" at once, not after the busy timeout: two of them upgrade
        # read transactions to writes on the same sqlite file, and sqlite
        # refuses one instead of waiting (a deadlock it cannot wait out).
        # That is Cinder's start, not the driver: set up once more (setup.sh
        # wipes its run directory). Any other failure fails at once.
        for attempt in (1, 2):
            with open(self.setup_log, 'wb') as out:
                r = subprocess.run(['timeout', str(SETUP_TIMEOUT_S),
                                    os.path.join(TOOLS, 'setup.sh')],
                                   env=self.env, stdout=out,
                                   stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
            if r.returncode == 0:
                break
            self.teardown()
            with open(self.setup_log) as f:
                output = f.read()
            if attempt == 1 and 'database is locked' in output:
                continue
            raise RuntimeError('Cinder setup.sh failed (%s): %s'
                               % (r.returncode, output[-4000:]))
        from cinderclient import client as cinder_client
        from cinderclient.contrib import noauth
        from keystoneauth1 import session as ks_session
        auth = noauth.CinderNoAuthPlugin(
            'admin', PROJECT, endpoint='http://127.0.0.1:%d/v3' % api_port)
        self.c = cinder_client.Client(
            '3.71', session=ks_session.Session(auth=auth))

    def teardown(self):
        subprocess.run(['timeout', '180', os.path.join(TOOLS, 'teardown.sh')],
                       env=self.env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def volume_errors(self):
        path = os.path.join(self.run_dir, 'log', 'cinder-volume.log')
        try:
            with open(path) as f:
                return ''.join([line for line in f if ' ERROR ' in line][-15:])
        except OSError:
            return '(no cinder-volume.log)'

    def wait(self, manager, obj_id, status, timeout=STEP_TIMEOUT_S):
        """Polls until the object reaches status; fails on an error status,
        with cinder-volume's ERROR lines."""
        deadline = time.monotonic() + timeout
        while True:
            obj = manager.get(obj_id)
            if obj.status == status:
                return obj
            if obj.status.startswith('error'):
                raise AssertionError('%s %s is %s; cinder-volume errors:\n%s'
                                     % (type(obj).__name__, obj_id,
                                        obj.status, self.volume_errors()))
            if time.monotonic() > deadline:
                raise AssertionError('%s %s still %s after %ss (want %s)'
                                     % (type(obj).__name__, obj_id,
                                        obj.status, timeout, status))
            time.sleep(1)

    def wait_gone(self, manager, obj_id, timeout=STEP_TIMEOUT_S):
        from cinderclient import exceptions
        deadline = time.monotonic() + timeout
        while True:
            try:
                obj = manager.get(obj_id)
            except exceptions.NotFound:
                return
            if obj.status.startswith('error'):
                raise AssertionError('deleting %s: %s; cinder-volume errors:'
                                     '\n%s' % (obj_id, obj.status,
                                               self.volume_errors()))
            if time.monotonic() > deadline:
                raise AssertionError('%s not deleted after %ss (%s)'
                                     % (obj_id, timeout, obj.status))
            time.sleep(1)


@pytest.fixture(scope='module')
def cinder(cluster, workdir):
    deployment = Cinder(cluster, workdir)
    try:
        yield deployment
    finally:
        deployment.teardown()


def hp(volume):
    return 'cinder-%s' % volume.id


def eventually(what, check, timeout=EXPORT_APPLY_S):
    deadline = time.monotonic() + timeout
    while True:
        ok, detail = check()
        if ok:
            return
        if time.monotonic() > deadline:
            raise AssertionError('%s: still not after %ss: %s'
                                 % (what, timeout, detail))
        time.sleep(0.3)


def qemu():
    home = os.path.expanduser('~/.cache/hpchain-qemu')
    img = os.environ.get('HPCHAIN_QEMU_IMG',
                         os.path.join(home, 'usr/bin/qemu-img'))
    modules = os.environ.get(
        'QEMU_MODULE_DIR', os.path.join(home, 'usr/lib/x86_64-linux-gnu/qemu'))
    if not os.access(img, os.X_OK):
        raise AssertionError('%s is missing: run scripts/setup.sh, which '
                             'unpacks qemu-img with the iSCSI driver' % img)
    env = dict(os.environ, QEMU_MODULE_DIR=modules)
    return img, env


def iscsi_opts(data, portal, length):
    """qemu --image-opts for the volume's first `length` bytes through one
    portal, logging in as HOST_IQN with the CHAP of the connection info."""
    opts = ['driver=raw', 'size=%d' % length, 'file.driver=iscsi',
            'file.transport=tcp', 'file.portal=%s' % portal,
            'file.target=%s' % data['target_iqn'],
            'file.lun=%d' % data['target_lun'],
            'file.initiator-name=%s' % HOST_IQN]
    if data.get('auth_method') == 'CHAP':
        opts += ['file.user=%s' % data['auth_username'],
                 'file.password=%s' % data['auth_password']]
    return ','.join(o.replace(',', ',,') for o in opts)


def test_cinder_end_to_end(cinder, cluster, workdir):
    c = cinder.c
    api = cluster.client

    # --- the backend is a pool of the scheduler
    pools = c.pools.list(detailed=True)
    ours = [p for p in pools if p.name.startswith('cinder-anchor@hpchain#')]
    assert [p.name for p in ours] == ['cinder-anchor@hpchain#rbd']
    pool = ours[0]  # cinderclient lifts the capabilities to attributes
    assert pool.vendor_name == 'hpchain'
    assert pool.storage_protocol == 'iSCSI'
    assert pool.thin_provisioning_support is True
    assert pool.QoS_support is True
    assert 0 < pool.free_capacity_gb <= pool.total_capacity_gb

    # --- a volume type with back-end QoS specs
    qos = c.qos_specs.create('hpchain-gold-%s' % unique()[:6], {
        'consumer': 'back-end', 'total_iops_sec': '4000',
        'total_iops_sec_max': '8000', 'total_iops_sec_max_length': '3',
        'read_bytes_sec': '209715200'})
    vtype = c.volume_types.create('hpchain-e2e-%s' % unique()[:6])
    vtype.set_keys({'volume_backend_name': 'hpchain'})
    c.qos_specs.associate(qos, vtype.id)
    multi = c.volume_types.create('hpchain-e2e-multi-%s' % unique()[:6])
    multi.set_keys({'volume_backend_name': 'hpchain',
                    'multiattach': '<is> True'})
    c.qos_specs.associate(qos, multi.id)

    # --- create: a thin 1 GiB volume in pool rbd with the QoS
    vol = c.volumes.create(1, name='e2e-a', volume_type=vtype.id)
    vol = cinder.wait(c.volumes, vol.id, 'available')
    assert getattr(vol, 'os-vol-host-attr:host') == 'cinder-anchor@hpchain#rbd'
    got = api.get_volume(hp(vol))
    assert got is not None, 'volume %s not in hpchain' % hp(vol)
    assert got['size_bytes'] == GiB and got['pool'] == 'rbd'
    limits = got['qos']['volume']
    assert limits['total_iops'] == {'rate': 4000, 'burst': 8000,
                                    'burst_seconds': 3}
    assert limits['read_bps']['rate'] == 209715200
    api.write(hp(vol), 0, b'A' * 65536)

    # --- snapshot
    snap = c.volume_snapshots.create(vol.id, name='e2e-snap')
    snap = cinder.wait(c.volume_snapshots, snap.id, 'available')
    names = [s['name'] for s in api.list_snapshots(hp(vol))]
    assert names == ['snapshot-%s' % snap.id]

    # --- revert to the snapshot (Cinder takes and drops its own backup
    # snapshot around it)
    api.write(hp(vol), 0, b'B' * 65536)
    c.volumes.revert_to_snapshot(vol, snap)
    cinder.wait(c.volumes, vol.id, 'available')
    assert api.read(hp(vol), 0, 65536) == b'A' * 65536
    assert [s['name'] for s in api.list_snapshots(hp(vol))] == names

    # --- volume from the snapshot: an independent copy
    from_snap = c.volumes.create(1, snapshot_id=snap.id, name='e2e-from-snap',
                                 volume_type=multi.id)
    from_snap = cinder.wait(c.volumes, from_snap.id, 'available')
    got = api.get_volume(hp(from_snap))
    assert got['parent'] is None and got['size_bytes'] == GiB
    assert got['qos']['volume']['total_iops']['rate'] == 4000
    assert api.read(hp(from_snap), 0, 65536) == b'A' * 65536

    # --- clone of the volume: no temporary snapshot is left
    clone = c.volumes.create(1, source_volid=vol.id, name='e2e-clone',
                             volume_type=vtype.id)
    clone = cinder.wait(c.volumes, clone.id, 'available')
    got = api.get_volume(hp(clone))
    assert got['parent'] is None
    assert api.read(hp(clone), 0, 65536) == b'A' * 65536
    assert [s['name'] for s in api.list_snapshots(hp(vol))] == names

    # --- extend
    c.volumes.extend(vol, 2)
    eventually('extend', lambda: (c.volumes.get(vol.id).size == 2 and
                                  c.volumes.get(vol.id).status == 'available',
                                  c.volumes.get(vol.id).status),
               timeout=STEP_TIMEOUT_S)
    assert api.get_volume(hp(vol))['size_bytes'] == 2 * GiB

    # --- attach: reserve, initialize_connection, use it, attach, detach
    connector = {'initiator': HOST_IQN, 'host': 'e2e-host',
                 'ip': '127.0.0.1', 'multipath': True, 'platform': 'x86_64',
                 'os_type': 'linux'}
    c.volumes.reserve(vol)
    assert c.volumes.get(vol.id).status == 'attaching'
    info = c.volumes.initialize_connection(vol, connector)
    assert info['driver_volume_type'] == 'iscsi'
    data = info['data']
    assert data['target_iqn'] == 'iqn.2026-11.io.hpchain:' + hp(vol)
    assert sorted(data['target_portals']) == sorted(cluster.portals)
    assert data['auth_method'] == 'CHAP'
    export = api.get_export(hp(vol))
    assert export['allowed_initiators'] == [HOST_IQN]
    assert export['chap_user'] == data['auth_username']

    for portal in data['target_portals']:
        url = 'iscsi://%s%%%s@%s/%s/%d' % (
            data['auth_username'], data['auth_password'], portal,
            data['target_iqn'], data['target_lun'])

        def inq():
            r = subprocess.run(['iscsi-inq', '-i', HOST_IQN, url],
                               capture_output=True, text=True, timeout=30)
            return r.returncode == 0, r.stderr
        eventually('iscsi-inq through %s' % portal, inq)

    img, env = qemu()
    payload = os.urandom(1 << 20)
    src = os.path.join(workdir, 'payload.raw')
    with open(src, 'wb') as f:
        f.write(payload)
    first, last = data['target_portals'][0], data['target_portals'][-1]
    r = subprocess.run([img, 'convert', '-n', '-f', 'raw',
                        '--target-image-opts', src,
                        iscsi_opts(data, first, len(payload))],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, 'qemu-img convert: %s' % r.stderr
    # Read back through another node's portal, and through hpchain's API.
    r = subprocess.run([img, 'compare', '--image-opts',
                        'driver=raw,file.driver=file,file.filename=%s' % src,
                        iscsi_opts(data, last, len(payload))],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, 'qemu-img compare: %s %s' % (r.stdout, r.stderr)
    assert api.read(hp(vol), 0, len(payload)) == payload

    c.volumes.attach(vol, None, '/dev/vdb', host_name='e2e-host')
    vol = cinder.wait(c.volumes, vol.id, 'in-use')

    c.volumes.terminate_connection(vol, connector)
    assert api.get_export(hp(vol)) is None, 'last initiator gone: unexported'
    attachment = vol.attachments[0]['attachment_id']
    c.volumes.detach(vol, attachment)
    cinder.wait(c.volumes, vol.id, 'available')
    assert api.get_volume(hp(vol))['iscsi'] is None

    # --- the attachments API (how Nova attaches today), with two hosts on
    # the multiattach volume made from the snapshot
    other = dict(connector, initiator=HOST_IQN + '-2', host='e2e-host-2')
    att = c.attachments.create(from_snap.id, connector)
    info = att['connection_info']  # create() answers a dict
    assert info['target_iqn'] == 'iqn.2026-11.io.hpchain:' + hp(from_snap)
    c.attachments.complete(att['id'])
    cinder.wait(c.volumes, from_snap.id, 'in-use')
    att2 = c.attachments.create(from_snap.id, other)
    c.attachments.complete(att2['id'])
    assert att2['connection_info']['auth_password'] == info['auth_password']
    export = api.get_export(hp(from_snap))
    assert export['allowed_initiators'] == [HOST_IQN, HOST_IQN + '-2']
    assert export['chap_user'] == info['auth_username']
    c.attachments.delete(att['id'])
    export = api.get_export(hp(from_snap))
    assert export['allowed_initiators'] == [HOST_IQN + '-2'], \
        'the other host keeps its access'
    c.attachments.delete(att2['id'])
    cinder.wait(c.volumes, from_snap.id, 'available')
    assert api.get_export(hp(from_snap)) is None

    # --- delete everything; hpchain frees it
    for v in (from_snap, clone):
        c.volumes.delete(v)
    for v in (from_snap, clone):
        cinder.wait_gone(c.volumes, v.id)
        assert api.get_volume(hp(v)) is None
    c.volume_snapshots.delete(snap)
    cinder.wait_gone(c.volume_snapshots, snap.id)
    assert api.list_snapshots(hp(vol)) == []
    c.volumes.delete(vol)
    cinder.wait_gone(c.volumes, vol.id)
    assert api.get_volume(hp(vol)) is None
