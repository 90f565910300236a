"""The driver against a real `hpchain dev` cluster.

Each test drives HPChainISCSIDriver as cinder-volume would and checks the
result through the hpchain API (and, for exports, with libiscsi's
`iscsi-inq` logging in to the real portals). Cinder's volume and snapshot
objects are stood in for by plain objects with the same fields; the only
Cinder service replaced is the QoS specs lookup in Cinder's database
(`_load_qos_specs`). The end-to-end test (test_cinder_e2e.py) runs the same
driver inside real Cinder services.
"""

import itertools
import os
import subprocess
import time

import pytest
from oslo_config import cfg

from cinder import exception
from cinder.volume import configuration
from cinder.volume import driver as cinder_driver

from hpchain_cinder import driver as hpdriver

from conftest import unique

GiB = 1 << 30
# Volumes that get flattened or deleted are kept small: those walks cost
# time per object of the volume's size. Cinder's sizes are whole GiB; the
# driver computes bytes from any number (the e2e test uses real GiB).
SMALL = 1 / 16  # GiB: 64 MiB, 16 objects of 4 MiB
_groups = itertools.count()


class FakeVolume(object):
    """The fields of cinder.objects.Volume the driver reads."""

    def __init__(self, size=SMALL, volume_type=None, **fields):
        self.id = fields.pop('id', unique())
        self.name_id = self.id
        self.size = size
        self.volume_type = volume_type
        self.provider_location = None
        self.provider_auth = None
        self.__dict__.update(fields)

    def update(self, model_update):
        for k, v in (model_update or {}).items():
            setattr(self, k, v)

    def __getitem__(self, key):
        return getattr(self, key)


class FakeSnapshot(object):
    def __init__(self, volume):
        self.id = unique()
        self.volume = volume
        self.volume_size = volume.size


class Driver(hpdriver.HPChainISCSIDriver):
    """The driver, with QoS specs from a dict instead of Cinder's DB."""

    qos_specs = {}

    def _load_qos_specs(self, qos_specs_id):
        return self.qos_specs[qos_specs_id]


def make_driver(cluster, setup=True, **overrides):
    group = 'hpchain_test_%d' % next(_groups)
    conf = configuration.Configuration(cinder_driver.volume_opts,
                                       config_group=group)
    conf.append_config_values(hpdriver.hpchain_opts)
    values = {'hpchain_api_url': [cluster.api_url],
              'hpchain_api_token': cluster.token,
              'hpchain_pool': 'rbd',
              'volume_backend_name': 'hpchain-unit'}
    values.update(overrides)
    for k, v in values.items():
        cfg.CONF.set_override(k, v, group=group)
    drv = Driver(configuration=conf)
    if setup:
        drv.do_setup(None)
        drv.check_for_setup_error()
    return drv


@pytest.fixture(scope='module')
def drv(cluster):
    return make_driver(cluster)


def create(drv, size=SMALL, volume_type=None):
    vol = FakeVolume(size=size, volume_type=volume_type)
    vol.update(drv.create_volume(vol))
    return vol


def hp_name(vol):
    return 'cinder-%s' % vol.id


def iscsi_inq(url, initiator):
    return subprocess.run(['iscsi-inq', '-i', initiator, url],
                          capture_output=True, text=True, timeout=30)


# Portals apply the map's exports within about 300 ms of a change
# (docs/iscsi.md), so a login right after an API call is retried, bounded.
EXPORT_APPLY_S = 10


def logs_in(url, initiator):
    """The login eventually succeeds (and keeps succeeding once it did)."""
    deadline = time.monotonic() + EXPORT_APPLY_S
    while True:
        r = iscsi_inq(url, initiator)
        if r.returncode == 0:
            return True
        if time.monotonic() > deadline:
            raise AssertionError('login %s as %s still fails after %ss: %s'
                                 % (url, initiator, EXPORT_APPLY_S, r.stderr))
        time.sleep(0.3)


def refused(url, initiator, reason='Authorization failure'):
    """The login is eventually refused, for the given reason."""
    deadline = time.monotonic() + EXPORT_APPLY_S
    while True:
        r = iscsi_inq(url, initiator)
        if r.returncode != 0 and reason.lower() in r.stderr.lower():
            return True
        if time.monotonic() > deadline:
            raise AssertionError('login %s as %s not refused (%s) after %ss: '
                                 'rc %s %s' % (url, initiator, reason,
                                               EXPORT_APPLY_S, r.returncode,
                                               r.stderr))
        time.sleep(0.3)


# ------------------------------------------------------------------ setup
def test_setup_reaches_the_api_and_finds_the_pool(cluster):
    drv = make_driver(cluster)
    assert drv.client.urls == [cluster.api_url]


def test_setup_refuses_a_wrong_token_naming_the_option(cluster):
    drv = make_driver(cluster, setup=False, hpchain_api_token='wrong-token')
    drv.do_setup(None)
    with pytest.raises(exception.VolumeBackendAPIException) as e:
        drv.check_for_setup_error()
    assert '401' in str(e.value) and 'hpchain_api_token' in str(e.value)


def test_setup_refuses_a_missing_pool_naming_it(cluster):
    drv = make_driver(cluster, setup=False, hpchain_pool='nosuchpool')
    drv.do_setup(None)
    with pytest.raises(exception.VolumeBackendAPIException) as e:
        drv.check_for_setup_error()
    assert 'pool.not_found' in str(e.value)
    assert 'hpchain pool create nosuchpool' in str(e.value)


def test_setup_reads_the_token_file(cluster):
    drv = make_driver(cluster, setup=False, hpchain_api_token=None,
                      hpchain_api_token_file=os.path.join(
                          cluster.data_dir, 'api-token'))
    drv.do_setup(None)
    drv.check_for_setup_error()


def test_setup_without_token_names_both_options(cluster):
    drv = make_driver(cluster, setup=False, hpchain_api_token=None)
    with pytest.raises(exception.InvalidConfigurationValue) as e:
        drv.do_setup(None)
    assert 'hpchain_api_token_file' in str(e.value)


def test_unreachable_api_falls_over_to_the_next_url(cluster):
    drv = make_driver(cluster, hpchain_api_url=['http://127.0.0.1:9',
                                                cluster.api_url])
    vol = create(drv)
    assert cluster.client.get_volume(hp_name(vol)) is not None


def test_unreachable_api_is_a_backend_error_naming_the_url(cluster):
    drv = make_driver(cluster, setup=False,
                      hpchain_api_url=['http://127.0.0.1:9'])
    drv.do_setup(None)
    with pytest.raises(exception.VolumeBackendAPIException) as e:
        drv.create_volume(FakeVolume())
    assert 'http://127.0.0.1:9' in str(e.value)
    assert 'no hpchain node answered' in str(e.value)


# ------------------------------------------------------------------ stats
def test_stats_report_the_pool_and_provisioned_capacity(cluster, drv):
    before = drv.get_volume_stats(refresh=True)
    vol = create(drv, size=3)
    stats = drv.get_volume_stats(refresh=True)
    pool = stats['pools'][0]
    assert stats['volume_backend_name'] == 'hpchain-unit'
    assert stats['vendor_name'] == 'hpchain'
    assert stats['storage_protocol'] == 'iSCSI'
    assert stats['driver_version'] == hpdriver.HPChainISCSIDriver.VERSION
    assert pool['pool_name'] == 'rbd'
    assert pool['replicas'] == 3
    assert pool['thin_provisioning_support'] is True
    assert pool['QoS_support'] is True
    assert pool['multiattach'] is True
    assert pool['online_extend_support'] is True
    assert pool['backend_state'] == 'up'
    # Real figures from every node's disks, over the 3 replicas.
    assert 0 < pool['free_capacity_gb'] <= pool['total_capacity_gb']
    assert (pool['provisioned_capacity_gb'] -
            before['pools'][0]['provisioned_capacity_gb']) == pytest.approx(3)
    drv.delete_volume(vol)


def test_stats_say_down_when_the_api_is_unreachable(cluster):
    drv = make_driver(cluster, setup=False,
                      hpchain_api_url=['http://127.0.0.1:9'])
    drv.do_setup(None)
    stats = drv.get_volume_stats(refresh=True)
    assert stats['pools'][0]['backend_state'] == 'down'
    assert stats['pools'][0]['free_capacity_gb'] == 0


# ---------------------------------------------------------------- volumes
def test_create_volume_makes_a_thin_volume_of_the_size(cluster, drv):
    vol = create(drv, size=2 * SMALL)
    assert vol.provider_location == 'hpchain:' + hp_name(vol)
    got = cluster.client.get_volume(hp_name(vol))
    assert got['size_bytes'] == 2 * SMALL * GiB
    assert got['pool'] == 'rbd'
    assert got['allocated_bytes'] == 0
    drv.delete_volume(vol)
    assert cluster.client.get_volume(hp_name(vol)) is None


def test_delete_volume_is_idempotent(cluster, drv):
    vol = create(drv)
    drv.delete_volume(vol)
    drv.delete_volume(vol)
    drv.delete_volume(FakeVolume())  # never existed


def test_delete_volume_removes_a_left_over_export(cluster, drv):
    vol = create(drv)
    cluster.client.export(hp_name(vol), allowed_initiators=['iqn.2000-01.x:y'])
    drv.delete_volume(vol)
    assert cluster.client.get_volume(hp_name(vol)) is None


def test_delete_volume_with_foreign_snapshot_is_busy(cluster, drv):
    vol = create(drv)
    cluster.client.create_snapshot(hp_name(vol), 'operator-snap')
    with pytest.raises(exception.VolumeIsBusy) as e:
        drv.delete_volume(vol)
    assert 'hpchain snap rm' in str(e.value)
    assert cluster.client.get_volume(hp_name(vol)) is not None
    cluster.client.delete_snapshot(hp_name(vol), 'operator-snap')
    drv.delete_volume(vol)


def test_extend_volume_grows_it(cluster, drv):
    vol = create(drv)
    drv.extend_volume(vol, 3)
    assert cluster.client.get_volume(hp_name(vol))['size_bytes'] == 3 * GiB


def test_duplicate_create_is_a_backend_error_with_hpchain_text(cluster, drv):
    vol = create(drv)
    with pytest.raises(exception.VolumeBackendAPIException) as e:
        drv.create_volume(vol)
    assert 'volume.exists' in str(e.value)
    assert hp_name(vol) in str(e.value)


# -------------------------------------------------------------- snapshots
def test_snapshot_volume_from_snapshot_and_delete_in_any_order(cluster, drv):
    src = create(drv)
    cluster.client.write(hp_name(src), 0, b'A' * 4096)
    snap = FakeSnapshot(src)
    drv.create_snapshot(snap)
    cluster.client.write(hp_name(src), 0, b'B' * 4096)
    snaps = cluster.client.list_snapshots(hp_name(src))
    assert [s['name'] for s in snaps] == ['snapshot-%s' % snap.id]

    dst = FakeVolume(size=2 * SMALL)
    dst.update(drv.create_volume_from_snapshot(dst, snap))
    got = cluster.client.get_volume(hp_name(dst))
    assert got['size_bytes'] == 2 * SMALL * GiB, 'grown to the size asked'
    assert got['parent'] is None, 'a volume from a snapshot is flattened'
    assert cluster.client.read(hp_name(dst), 0, 4096) == b'A' * 4096
    # The snapshot goes first: the new volume does not depend on it.
    drv.delete_snapshot(snap)
    drv.delete_snapshot(snap)  # idempotent
    assert cluster.client.list_snapshots(hp_name(src)) == []
    assert cluster.client.read(hp_name(dst), 0, 4096) == b'A' * 4096


def test_delete_snapshot_flattens_clones_made_outside_cinder(cluster, drv):
    src = create(drv)
    cluster.client.write(hp_name(src), 0, b'C' * 512)
    snap = FakeSnapshot(src)
    drv.create_snapshot(snap)
    other = 'foreign-clone-%s' % snap.id[:8]
    cluster.client.clone_snapshot(hp_name(src), 'snapshot-%s' % snap.id,
                                  other)
    drv.delete_snapshot(snap)
    assert cluster.client.get_volume(other)['parent'] is None
    assert cluster.client.read(other, 0, 512) == b'C' * 512


def test_revert_to_snapshot_restores_data_and_keeps_cinder_size(cluster, drv):
    vol = create(drv)
    cluster.client.write(hp_name(vol), 0, b'1' * 4096)
    snap = FakeSnapshot(vol)
    drv.create_snapshot(snap)
    cluster.client.write(hp_name(vol), 0, b'2' * 4096)
    drv.extend_volume(vol, 2 * SMALL)
    vol.size = 2 * SMALL
    drv.revert_to_snapshot(None, vol, snap)
    assert cluster.client.read(hp_name(vol), 0, 4096) == b'1' * 4096
    assert (cluster.client.get_volume(hp_name(vol))['size_bytes'] ==
            2 * SMALL * GiB)


def test_cloned_volume_copies_data_and_leaves_no_snapshot(cluster, drv):
    src = create(drv)
    cluster.client.write(hp_name(src), 5 * 4096, b'S' * 4096)
    dst = FakeVolume()
    dst.update(drv.create_cloned_volume(dst, src))
    assert cluster.client.list_snapshots(hp_name(src)) == []
    got = cluster.client.get_volume(hp_name(dst))
    assert got['parent'] is None
    assert cluster.client.read(hp_name(dst), 5 * 4096, 4096) == b'S' * 4096
    # Independent copies.
    cluster.client.write(hp_name(src), 5 * 4096, b'T' * 4096)
    assert cluster.client.read(hp_name(dst), 5 * 4096, 4096) == b'S' * 4096


def test_failed_clone_leaves_nothing_behind(cluster, drv):
    src = create(drv, size=2 * SMALL)
    dst = FakeVolume(size=SMALL)  # smaller than the source: hpchain refuses
    with pytest.raises(exception.VolumeBackendAPIException) as e:
        drv.create_cloned_volume(dst, src)
    assert 'volume.shrink' in str(e.value)
    assert cluster.client.get_volume(hp_name(dst)) is None
    assert cluster.client.list_snapshots(hp_name(src)) == []


def test_clone_into_an_existing_name_keeps_the_existing_volume(cluster, drv):
    src = create(drv)
    dst = create(drv)
    cluster.client.write(hp_name(dst), 0, b'keep' * 128)
    with pytest.raises(exception.VolumeBackendAPIException) as e:
        drv.create_cloned_volume(dst, src)
    assert 'volume.exists' in str(e.value)
    assert cluster.client.read(hp_name(dst), 0, 512) == b'keep' * 128
    assert cluster.client.list_snapshots(hp_name(src)) == []


# --------------------------------------------------------------------- QoS
def test_qos_specs_map_onto_hpchain_limits():
    body = hpdriver.qos_limits_from_specs({
        'total_iops_sec': '500', 'total_iops_sec_max': '1000',
        'total_iops_sec_max_length': '5', 'read_bytes_sec': '1048576',
        'write_iops_sec_per_gb': '10', 'write_iops_sec_per_gb_min': '30',
        'size_iops_sec': '4096'}, size_gb=2)
    assert body['total_iops'] == {'rate': 500, 'burst': 1000,
                                  'burst_seconds': 5}
    assert body['read_bps'] == {'rate': 1048576, 'burst': 0,
                                'burst_seconds': 0}
    assert body['write_iops']['rate'] == 30  # max(10 * 2, 30)
    assert body['read_iops'] == {'rate': 0, 'burst': 0, 'burst_seconds': 0}
    assert hpdriver.qos_limits_from_specs({}, 1) == {}
    with pytest.raises(ValueError) as e:
        hpdriver.qos_limits_from_specs({'total_iops_sec': 'fast'}, 1)
    assert 'total_iops_sec' in str(e.value)


def qos_type(drv, consumer, specs):
    qos_id = unique()
    drv.qos_specs[qos_id] = {'consumer': consumer, 'specs': specs}
    return {'name': 'gold', 'qos_specs_id': qos_id}


def test_qos_of_the_volume_type_reaches_hpchain(cluster, drv):
    vtype = qos_type(drv, 'back-end', {'total_iops_sec': '300',
                                       'write_bytes_sec_per_gb': '1000000'})
    vol = create(drv, size=2, volume_type=vtype)
    qos = cluster.client.get_volume(hp_name(vol))['qos']['volume']
    assert qos['total_iops']['rate'] == 300
    assert qos['write_bps']['rate'] == 2000000
    drv.extend_volume(vol, 3)
    vol.size = 3
    qos = cluster.client.get_volume(hp_name(vol))['qos']['volume']
    assert qos['write_bps']['rate'] == 3000000
    # Clones get the QoS of their own type.
    src = create(drv)
    snap = FakeSnapshot(src)
    drv.create_snapshot(snap)
    dst = FakeVolume(volume_type=qos_type(
        drv, 'both', {'read_iops_sec': '77'}))
    dst.update(drv.create_volume_from_snapshot(dst, snap))
    qos = cluster.client.get_volume(hp_name(dst))['qos']['volume']
    assert qos['read_iops']['rate'] == 77
    assert qos['total_iops']['rate'] == 0
    # Retype lifts or changes limits live.
    assert drv.retype(None, vol, {'qos_specs_id': None}, {}, None)[0]
    qos = cluster.client.get_volume(hp_name(vol))['qos']['volume']
    assert qos['total_iops']['rate'] == 0
    assert qos['write_bps']['rate'] == 0


def test_front_end_qos_is_left_to_nova(cluster, drv):
    vol = create(drv, volume_type=qos_type(drv, 'front-end',
                                           {'total_iops_sec': '300'}))
    qos = cluster.client.get_volume(hp_name(vol))['qos']['volume']
    assert qos['total_iops']['rate'] == 0


def test_inconsistent_qos_is_refused_with_hpchain_reason(cluster, drv):
    vol = FakeVolume(volume_type=qos_type(drv, 'back-end', {
        'total_iops_sec': '100', 'total_iops_sec_max': '50'}))
    with pytest.raises(exception.VolumeBackendAPIException) as e:
        drv.create_volume(vol)
    assert 'qos.invalid' in str(e.value)
    assert 'total_iops' in str(e.value)
    assert cluster.client.get_volume(hp_name(vol)) is None


# ----------------------------------------------------------------- export
HOST_A = 'iqn.2004-10.org.example:host-a'
HOST_B = 'iqn.2004-10.org.example:host-b'


def attach(drv, vol, initiator):
    connector = {'initiator': initiator, 'host': initiator.split(':')[1],
                 'multipath': True}
    vol.update(drv.create_export(None, vol, connector))
    return drv.initialize_connection(vol, connector)


def url_of(data, portal=None, password=None):
    auth = ''
    if data.get('auth_method') == 'CHAP':
        auth = '%s%%%s@' % (data['auth_username'],
                            password or data['auth_password'])
    return 'iscsi://%s%s/%s/%d' % (auth, portal or data['target_portal'],
                                   data['target_iqn'], data['target_lun'])


def test_initialize_connection_gives_every_portal_with_chap(cluster, drv):
    vol = create(drv)
    info = attach(drv, vol, HOST_A)
    assert info['driver_volume_type'] == 'iscsi'
    data = info['data']
    assert data['target_iqn'] == 'iqn.2026-11.io.hpchain:' + hp_name(vol)
    assert data['target_lun'] == 0
    assert sorted(data['target_portals']) == sorted(cluster.portals)
    assert data['target_portal'] in cluster.portals
    assert data['target_iqns'] == [data['target_iqn']] * 3
    assert data['target_luns'] == [0, 0, 0]
    assert data['auth_method'] == 'CHAP'
    assert len(data['auth_password']) >= 12
    assert vol.provider_auth == 'CHAP %s %s' % (data['auth_username'],
                                                data['auth_password'])
    export = cluster.client.get_export(hp_name(vol))
    assert export['allowed_initiators'] == [HOST_A]
    assert export['chap_user'] == data['auth_username']

    # A real initiator logs in through every node's portal...
    for portal in data['target_portals']:
        assert logs_in(url_of(data, portal), HOST_A)
    # ...but not with another IQN, nor with a wrong secret.
    assert refused(url_of(data), HOST_B)
    assert refused(url_of(data, password='wrong-secret-123'), HOST_A,
                   reason='Authentication failure')

    drv.terminate_connection(vol, {'initiator': HOST_A})
    assert cluster.client.get_export(hp_name(vol)) is None
    drv.remove_export(None, vol)  # nothing left: still fine
    assert refused(url_of(data), HOST_A, reason='Target not found')


def test_multiattach_keeps_the_export_for_the_other_host(cluster, drv):
    vol = create(drv)
    attach(drv, vol, HOST_A)
    data = attach(drv, vol, HOST_B)['data']
    export = cluster.client.get_export(hp_name(vol))
    assert export['allowed_initiators'] == [HOST_A, HOST_B]
    drv.terminate_connection(vol, {'initiator': HOST_A})
    drv.remove_export(None, vol)
    export = cluster.client.get_export(hp_name(vol))
    assert export['allowed_initiators'] == [HOST_B]
    assert export['chap_user'] == data['auth_username'], 'CHAP kept'
    assert logs_in(url_of(data), HOST_B)
    assert refused(url_of(data), HOST_A)
    # Force detach (no connector) removes the export altogether.
    drv.terminate_connection(vol, None)
    assert cluster.client.get_export(hp_name(vol)) is None


def test_without_chap_the_acl_alone_guards_the_export(cluster):
    drv = make_driver(cluster, hpchain_chap=False)
    vol = create(drv)
    data = attach(drv, vol, HOST_A)['data']
    assert 'auth_method' not in data
    assert vol.provider_auth is None
    assert logs_in(url_of(data), HOST_A)
    assert refused(url_of(data), HOST_B)
    drv.terminate_connection(vol, {'initiator': HOST_A})


def test_connector_without_initiator_is_refused(cluster, drv):
    vol = create(drv)
    with pytest.raises(exception.InvalidConnectorException) as e:
        drv.initialize_connection(vol, {'host': 'h'})
    assert 'initiatorname.iscsi' in str(e.value)
    assert cluster.client.get_export(hp_name(vol)) is None


# ----------------------------------------------------------------- manage
def test_manage_existing_and_unmanage(cluster, drv):
    name = 'legacy-%s' % unique()[:8]
    cluster.client.create_volume(name, 'rbd', GiB + GiB // 2)
    cluster.client.write(name, 0, b'old data' * 64)
    ref = {'source-name': name}
    vol = FakeVolume(size=None)
    assert drv.manage_existing_get_size(vol, ref) == 2
    vol.size = 2
    vol.volume_type = qos_type(drv, 'back-end', {'total_iops_sec': '42'})
    listed = drv.get_manageable_volumes([], None, 1000, 0, ['size'], ['asc'])
    assert any(e['reference'] == ref and e['safe_to_manage']
               for e in listed)
    vol.update(drv.manage_existing(vol, ref))
    assert vol.provider_location == 'hpchain:' + name
    got = cluster.client.get_volume(name)
    assert got['size_bytes'] == 2 * GiB
    assert got['qos']['volume']['total_iops']['rate'] == 42
    assert cluster.client.read(name, 0, 512) == b'old data' * 64
    listed = drv.get_manageable_volumes([vol], None, 1000, 0, ['size'],
                                        ['asc'])
    assert [e['cinder_id'] for e in listed
            if e['reference'] == ref] == [vol.id]
    # Attach works under the volume's own name.
    data = attach(drv, vol, HOST_A)['data']
    assert data['target_iqn'] == 'iqn.2026-11.io.hpchain:' + name
    drv.terminate_connection(vol, {'initiator': HOST_A})
    drv.unmanage(vol)
    assert cluster.client.get_volume(name) is not None
    drv.delete_volume(vol)  # as if managed again and deleted
    assert cluster.client.get_volume(name) is None


def test_manage_refuses_missing_volume_and_other_pool(cluster, drv):
    with pytest.raises(exception.ManageExistingInvalidReference) as e:
        drv.manage_existing_get_size(FakeVolume(), {'source-name': 'nope'})
    assert 'hpchain volume ls' in str(e.value)
    with pytest.raises(exception.ManageExistingInvalidReference):
        drv.manage_existing_get_size(FakeVolume(), {})


def test_driver_options_are_documented():
    names = {o.name for o in hpdriver.HPChainISCSIDriver.get_driver_options()}
    assert {'hpchain_api_url', 'hpchain_api_token', 'hpchain_pool',
            'hpchain_chap', 'hpchain_api_ca_file',
            'hpchain_api_tls_verify'} <= names
    doc = os.path.join(os.path.dirname(__file__), '..', '..', 'docs',
                       'cinder.md')
    sample = os.path.join(os.path.dirname(__file__), '..',
                          'cinder.conf.sample')
    with open(doc) as f:
        doc_text = f.read()
    with open(sample) as f:
        sample_text = f.read()
    for opt in hpdriver.HPChainISCSIDriver.get_driver_options():
        assert opt.help, opt.name
        assert '`%s`' % opt.name in doc_text, opt.name
        assert opt.name in sample_text, opt.name


def test_the_driver_implements_what_cinder_calls():
    # cinder's own compliance check passes an empty class on Python 3.
    cls = hpdriver.HPChainISCSIDriver
    for method in ('do_setup', 'check_for_setup_error', 'create_volume',
                   'delete_volume', 'create_snapshot', 'delete_snapshot',
                   'create_volume_from_snapshot', 'create_cloned_volume',
                   'extend_volume', 'revert_to_snapshot', 'create_export',
                   'ensure_export', 'remove_export', 'initialize_connection',
                   'terminate_connection', '_update_volume_stats',
                   'manage_existing', 'manage_existing_get_size', 'unmanage',
                   'retype', 'get_driver_options'):
        assert method in cls.__dict__, method
