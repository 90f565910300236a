"""hpchain as an OpenStack Cinder backend.

``volume_driver = hpchain_cinder.driver.HPChainISCSIDriver``; see
docs/cinder.md in the hpchain repository.
"""

__version__ = '1.0.0'
