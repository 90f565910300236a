"""The driver's cinder.conf options (backend section).

Each option's help is the operator documentation: docs/cinder.md repeats
it, and `get_driver_options()` hands the list to Cinder.
"""

from oslo_config import cfg

hpchain_opts = [
    cfg.ListOpt(
        'hpchain_api_url',
        default=['http://127.0.0.1:9400'],
        help='URL of the hpchain management API (without /v1). Any node '
             'answers any request; give several, comma separated, and a '
             'request that cannot reach one node goes to the next.'),
    cfg.StrOpt(
        'hpchain_api_token',
        secret=True,
        help='Bearer token of the hpchain API: the contents of the '
             'cluster\'s api-token file. Takes precedence over '
             'hpchain_api_token_file.'),
    cfg.StrOpt(
        'hpchain_api_token_file',
        help='File holding the API token (e.g. /etc/hpchain/api-token), '
             'read at start, for deployments that keep secrets out of '
             'cinder.conf. Used when hpchain_api_token is not set.'),
    cfg.StrOpt(
        'hpchain_pool',
        default='rbd',
        help='hpchain pool that holds this backend\'s volumes. It must exist '
             '(`hpchain pool create NAME`); the driver checks at start.'),
    cfg.BoolOpt(
        'hpchain_chap',
        default=True,
        help='Protect each export with CHAP: the driver generates a user and '
             'a 16-character secret per volume at its first export, keeps '
             'them in the volume\'s provider_auth and hands them to the '
             'initiator in the connection info. When false, exports are '
             'protected only by the initiator allow list.'),
    cfg.IntOpt(
        'hpchain_api_timeout',
        default=120,
        min=1,
        help='Seconds to wait for one API answer. Deleting a volume or a '
             'snapshot walks all its objects in one request, so those get '
             'this plus 60 s per GiB of the volume.'),
    cfg.StrOpt(
        'hpchain_api_ca_file',
        help='CA bundle to verify an https:// hpchain API against '
             '(default: the system\'s trust store).'),
    cfg.BoolOpt(
        'hpchain_api_tls_verify',
        default=True,
        help='Verify the TLS certificate of an https:// hpchain API. Turn '
             'off only for tests: without it the API token can be stolen.'),
    cfg.IntOpt(
        'hpchain_volume_block_size',
        default=512,
        choices=[512, 4096],
        help='Logical block size of new volumes (512 or 4096 bytes).'),
    cfg.StrOpt(
        'hpchain_volume_prefix',
        default='cinder-',
        help='Prefix of the hpchain names of Cinder volumes: a volume is '
             'named PREFIX + its Cinder id (name_id). Change it only before '
             'the first volume: existing volumes are not renamed.'),
]
