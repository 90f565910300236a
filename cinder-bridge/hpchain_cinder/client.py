"""A small client for the hpchain management API (HTTP/JSON under /v1).

Standard library only, so that it loads in any Cinder environment. It knows
the API's shape (docs/api.md), not Cinder: the driver maps Cinder's objects
onto these calls. Every failure is an :class:`HPChainAPIError` whose text
names the request, the hpchain error code and hpchain's own message (which
names the object, the reason and the fix).

Several API URLs may be given (any node answers any request): a request
that cannot reach one node is sent to the next; an HTTP error answer is
final (the node reached the cluster and the cluster said no).
"""

import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request

GiB = 1 << 30

# Objects a flatten or rollback step walks per request: bounded so that one
# request stays well under the client timeout even on a slow cluster.
WALK_STEP_OBJECTS = 32


class HPChainAPIError(Exception):
    """An API call failed: ``status`` (None when no node answered),
    ``code`` (hpchain's stable error code) and ``message``."""

    def __init__(self, method, path, status, code, message):
        self.method = method
        self.path = path
        self.status = status
        self.code = code
        self.message = message
        if status is None:
            text = "hpchain API %s %s: %s" % (method, path, message)
        else:
            text = "hpchain API %s %s answered %s %s: %s" % (
                method, path, status, code, message)
        super().__init__(text)


class HPChainClient(object):
    """Talks to one hpchain cluster through its management API."""

    def __init__(self, urls, token, timeout=60, ca_file=None, verify=True):
        if isinstance(urls, str):
            urls = [u.strip() for u in urls.split(",") if u.strip()]
        if not urls:
            raise ValueError("no hpchain API URL given: set hpchain_api_url "
                             "to e.g. http://127.0.0.1:9400")
        self.urls = [u.rstrip("/") for u in urls]
        self.token = token
        self.timeout = timeout
        self._ssl = None
        if any(u.startswith("https://") for u in self.urls):
            self._ssl = ssl.create_default_context(cafile=ca_file)
            if not verify:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE

    # ------------------------------------------------------------ transport
    def request(self, method, path, body=None, query=None, timeout=None,
                ok_codes=()):
        """Sends one request; returns the decoded JSON answer (None for 204).

        ``ok_codes``: hpchain error codes that count as success (returns
        None), for idempotent deletes (``volume.not_found``, ...).
        """
        if query:
            path = path + "?" + urllib.parse.urlencode(query)
        data = None
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        unreachable = []
        for base in self.urls:
            req = urllib.request.Request(base + "/v1" + path, data=data,
                                         headers=headers, method=method)
            try:
                with urllib.request.urlopen(
                        req, timeout=timeout or self.timeout,
                        context=self._ssl) as answer:
                    raw = answer.read()
                    if answer.status == 204 or not raw:
                        return None
                    return json.loads(raw)
            except urllib.error.HTTPError as e:
                err = self._error(method, path, e)
                if err.code in ok_codes:
                    return None
                raise err
            except (urllib.error.URLError, socket.timeout, ConnectionError,
                    OSError) as e:
                reason = getattr(e, "reason", e)
                unreachable.append("%s (%s)" % (base, reason))
        raise HPChainAPIError(
            method, path, None, None,
            "no hpchain node answered: %s; check hpchain_api_url and that the "
            "nodes run (`hpchain cluster status`)" % "; ".join(unreachable))

    @staticmethod
    def _error(method, path, e):
        raw = e.read()
        try:
            err = json.loads(raw)["error"]
            return HPChainAPIError(method, path, e.code, err.get("code"),
                                   err.get("message"))
        except (ValueError, KeyError, TypeError):
            text = raw.decode("utf-8", "replace").strip()[:300]
            return HPChainAPIError(method, path, e.code, "http.%d" % e.code,
                                   text or e.reason)

    @staticmethod
    def _q(name):
        return urllib.parse.quote(name, safe="")

    # --------------------------------------------------------------- pools
    def get_pool(self, pool):
        return self.request("GET", "/pools/%s" % self._q(pool))

    # ------------------------------------------------------------- volumes
    def list_volumes(self):
        return self.request("GET", "/volumes")

    def get_volume(self, name):
        """The volume, or None if it does not exist."""
        try:
            return self.request("GET", "/volumes/%s" % self._q(name))
        except HPChainAPIError as e:
            if e.code == "volume.not_found":
                return None
            raise

    def create_volume(self, name, pool, size_bytes, block_size=None,
                      qos=None):
        body = {"name": name, "pool": pool, "size_bytes": size_bytes}
        if block_size:
            body["block_size"] = block_size
        if qos:
            body["qos"] = qos
        return self.request("POST", "/volumes", body)

    def resize_volume(self, name, size_bytes, allow_shrink=False):
        body = {"size_bytes": size_bytes}
        if allow_shrink:
            body["allow_shrink"] = True
        return self.request("PATCH", "/volumes/%s" % self._q(name), body)

    def delete_volume(self, name, timeout=None):
        """Deletes it; a volume that does not exist counts as deleted."""
        return self.request("DELETE", "/volumes/%s" % self._q(name),
                            timeout=timeout, ok_codes=("volume.not_found",))

    def set_qos(self, name, qos):
        return self.request("PUT", "/volumes/%s/qos" % self._q(name), qos)

    def flatten(self, name, step=WALK_STEP_OBJECTS):
        """Copies what the clone shares with its parent, ``step`` objects per
        request, then the link is cut."""
        return self._walk("POST", "/volumes/%s/flatten" % self._q(name), step)

    def _walk(self, method, path, step):
        start = 0
        while True:
            progress = self.request(method, path,
                                    query={"from_object": start,
                                           "objects": step})
            if progress["done"]:
                return progress
            if progress["next_object"] <= start:
                raise HPChainAPIError(
                    method, path, None, "walk.stuck",
                    "made no progress past object %d of %d; retry the "
                    "operation" % (start, progress["total_objects"]))
            start = progress["next_object"]

    # ----------------------------------------------------------- snapshots
    def list_snapshots(self, volume):
        return self.request("GET", "/volumes/%s/snapshots" % self._q(volume))

    def get_snapshot(self, volume, snap):
        try:
            return self.request("GET", "/volumes/%s/snapshots/%s" % (
                self._q(volume), self._q(snap)))
        except HPChainAPIError as e:
            if e.code in ("volume.not_found", "snapshot.not_found"):
                return None
            raise

    def create_snapshot(self, volume, snap):
        return self.request("POST", "/volumes/%s/snapshots" % self._q(volume),
                            {"name": snap})

    def delete_snapshot(self, volume, snap, timeout=None):
        """Deletes it; a snapshot (or volume) that does not exist counts as
        deleted."""
        return self.request(
            "DELETE",
            "/volumes/%s/snapshots/%s" % (self._q(volume), self._q(snap)),
            timeout=timeout,
            ok_codes=("volume.not_found", "snapshot.not_found"))

    def clone_snapshot(self, volume, snap, name, qos=None):
        body = {"name": name}
        if qos:
            body["qos"] = qos
        return self.request("POST", "/volumes/%s/snapshots/%s/clone" % (
            self._q(volume), self._q(snap)), body)

    def snapshot_children(self, volume, snap):
        return self.request("GET", "/volumes/%s/snapshots/%s/children" % (
            self._q(volume), self._q(snap)))

    def rollback(self, volume, snap, step=WALK_STEP_OBJECTS):
        return self._walk("POST", "/volumes/%s/snapshots/%s/rollback" % (
            self._q(volume), self._q(snap)), step)

    # --------------------------------------------------------------- iSCSI
    def get_export(self, name):
        """The volume's iSCSI export, or None if it is not exported."""
        try:
            return self.request("GET", "/volumes/%s/iscsi" % self._q(name))
        except HPChainAPIError as e:
            if e.code == "volume.not_exported":
                return None
            raise

    def export(self, name, chap_user=None, chap_secret=None,
               allowed_initiators=()):
        body = {"allowed_initiators": list(allowed_initiators)}
        if chap_user:
            body["chap_user"] = chap_user
            body["chap_secret"] = chap_secret
        return self.request("PUT", "/volumes/%s/iscsi" % self._q(name), body)

    def unexport(self, name):
        """Stops the export; one that does not exist counts as stopped."""
        return self.request("DELETE", "/volumes/%s/iscsi" % self._q(name),
                            ok_codes=("volume.not_exported",))

    # ---------------------------------------------------------------- data
    def write(self, name, offset, data):
        """Writes raw bytes (tests and tools; at most 64 MiB)."""
        return self._raw("PUT", name, {"offset": offset}, data)

    def read(self, name, offset, length):
        return self._raw("GET", name, {"offset": offset, "length": length})

    def _raw(self, method, name, query, data=None):
        path = "/volumes/%s/data?%s" % (self._q(name),
                                        urllib.parse.urlencode(query))
        req = urllib.request.Request(
            self.urls[0] + "/v1" + path, data=data, method=method,
            headers={"Authorization": "Bearer " + (self.token or ""),
                     "Content-Type": "application/octet-stream"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout,
                                        context=self._ssl) as answer:
                return answer.read()
        except urllib.error.HTTPError as e:
            raise self._error(method, path, e)
