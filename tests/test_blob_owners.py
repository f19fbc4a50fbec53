"""Issue 25: in the hub service, blobs (a map()'s shared function part, with the data it captured) belong
to whoever uploaded them, warm processes to their owners, and the service is reached only through what
OwnerView declares. The service with real stores (SQLite, a real Redis) and real payloads, seen as each
user sees it; tests/test_hub.py runs the same through a real JupyterHub."""

from __future__ import annotations


import pytest

from conftest import SERVICE_BACKENDS, as_user, service_over

from jupyter_taskq import blobs
from jupyter_taskq.payload import calling_context
from jupyter_taskq.status import TaskStatus


def secret_function(x):
    return x + 1


@pytest.fixture(params=SERVICE_BACKENDS)
def service(request, tmp_path):
    yield from service_over(request, tmp_path, gpus=())


def upload(service, view, shared) -> bool:
    return view.put_blob(shared.key, service.spool_bytes(shared.data))


def submit_naming(service, view, shared, *args):
    return view.submit_many([(service.spool_bytes(blobs.dumps_args(shared, args, None, calling_context())),
                              view.validate_options({}))])


def finish(service, task_id):
    assert service.store.transition(task_id, TaskStatus.COMPLETE, [TaskStatus.PENDING])


def test_a_blob_is_its_uploaders_and_the_same_bytes_from_another_user_share_one_file(service):
    from jupyter_taskq.server.service import ServiceError

    alice, bob, carol = as_user(service, "alice"), as_user(service, "bob"), as_user(service, "carol", admin=True)
    shared = blobs.shared_part(secret_function, calling_context(), share_at=0)
    path = service.state.blob(shared.key)
    assert upload(service, alice, shared) is True and path.exists()
    assert alice.has_blob(shared.key) and not bob.has_blob(shared.key), "HEAD: someone else's reads as absent"
    assert not carol.has_blob(shared.key), "an admin's own blobs are what they uploaded too"
    alices = submit_naming(service, alice, shared, 1)[0]

    for view in (bob, carol):  # naming someone else's blob: refused, naming it, and nothing is created
        with pytest.raises(ServiceError) as refused:
            submit_naming(service, view, shared, 2)
        assert refused.value.status == 409 and f"blobs/{shared.key}" in str(refused.value)
        assert service.store.count(owner=view.me.owner) == 0
    assert service.store.count() == 1

    assert upload(service, bob, shared) is True, "new to bob: 201, so it tells him nothing of alice's"
    assert upload(service, bob, shared) is False, "his already"
    assert bob.has_blob(shared.key)
    assert [p.name for p in service.blobs.folder.iterdir()] == [path.name], "one file on disk"
    bobs = submit_naming(service, bob, shared, 2)[0]
    assert bobs["owner"] == "bob"

    finish(service, alices["id"])
    retried = carol.retry(alices["id"])  # an admin retries alice's task: alice's again, naming her own blob
    assert retried["owner"] == "alice"
    finish(service, retried["id"])
    for task in (alices, retried):
        service.delete(task["id"])
    assert path.exists() and bob.has_blob(shared.key) and alice.has_blob(shared.key), "bob's task still names it"
    finish(service, bobs["id"])
    service.delete(bobs["id"])
    assert not path.exists(), "gone with the last task that named it"
    assert not alice.has_blob(shared.key) and not bob.has_blob(shared.key)
    assert not service.store.blob_owned(shared.key, "alice") and not service.store.blob_owned(shared.key, "bob"), \
        "its owner records went with it"
    assert upload(service, bob, shared) is True and not alice.has_blob(shared.key), "uploaded again: bob's alone"


def test_no_owner_record_means_no_access(service):
    """A blob file with no record (uploaded before blobs had owners, or its record lost) is nobody's."""
    from jupyter_taskq.server.service import ServiceError

    alice = as_user(service, "alice")
    shared = blobs.shared_part(secret_function, calling_context(), share_at=0)
    service.state.blob(shared.key).write_bytes(shared.data)
    assert not alice.has_blob(shared.key)
    with pytest.raises(ServiceError) as refused:
        submit_naming(service, alice, shared, 1)
    assert refused.value.status == 409 and service.store.count() == 0
    assert upload(service, alice, shared) is True and alice.has_blob(shared.key), "her upload makes it hers"


def test_the_unclaimed_sweep_removes_a_blob_and_its_owners(service):
    import os
    import time

    from jupyter_taskq.server.blobstore import UNCLAIMED_FOR

    alice, bob = as_user(service, "alice"), as_user(service, "bob")
    shared = blobs.shared_part(secret_function, calling_context(), share_at=0)
    upload(service, alice, shared)
    upload(service, bob, shared)
    long_ago = time.time() - UNCLAIMED_FOR - 60
    os.utime(service.state.blob(shared.key), (long_ago, long_ago))
    assert service.blobs.sweep() == 1 and not service.state.blob(shared.key).exists()
    assert not service.store.blob_owned(shared.key, "alice") and not service.store.blob_owned(shared.key, "bob")


def test_owner_view_fails_closed(service):
    """Only what OwnerView scopes or declares safe for every user is reachable through it: a service method
    added later, never wrapped, is refused rather than open to every hub user unscoped."""
    from jupyter_taskq.hub.owners import NotScoped

    class Grown(type(service)):
        def everyones_secrets(self):
            return "all of it"

    service.__class__ = Grown
    bob = as_user(service, "bob")
    for name in ("everyones_secrets", "reconcile", "purge_old_records", "blobs", "state", "objects"):
        with pytest.raises(NotScoped) as refused:
            getattr(bob, name)
        assert f"TaskService.{name}" in str(refused.value) and "PASS_THROUGH" in str(refused.value)
    assert not hasattr(bob, "everyones_secrets")
    admin = as_user(service, "root", admin=True)
    with pytest.raises(NotScoped):
        admin.everyones_secrets()  # closed for admins too: undeclared is undeclared
    assert bob.fingerprint() is not None and bob.list()["total"] == 0, "declared and scoped ones work"
    # The store a hub user's view hands out (task groups' counts, attempts) is closed the same way.
    for name in ("list", "delete", "blob_refs", "set_status"):
        with pytest.raises(NotScoped):
            getattr(bob.store, name)
    assert bob.store.statuses([]) == {}


def test_warm_processes_are_dropped_and_shown_per_owner(service):
    store = service.store
    warm = [{"function": "f", "cwd": "/a", "owner": "alice", "idle_s": 1.0},
            {"function": "g", "cwd": "/b", "owner": "bob", "idle_s": 2.0}]
    for name in ("w1", "w2"):
        store.register_worker({"name": name, "instance": f"{name}-1", "pool": "cpu", "device": None, "host": "h",
                               "pid": 1, "started_at": 0.0, "heartbeat_at": 0.0, "state": "idle",
                               "current_task": None})
        assert store.heartbeat(name, f"{name}-1", "idle", None, warm) is False, "nothing asked yet"

    alice, bob, admin = as_user(service, "alice"), as_user(service, "bob"), as_user(service, "root", admin=True)
    assert [w["owner"] for w in alice.stats()["workers"][0]["warm"]] == ["alice"], "a user sees their own"
    assert [w["owner"] for w in admin.stats()["workers"][0]["warm"]] == ["alice", "bob"], "an admin all"

    assert alice.drop_warm() == {"workers_asked": 2}
    bob.drop_warm()
    assert store.heartbeat("w1", "w1-1", "idle", None, warm) == ("alice", "bob"), "only theirs, once"
    assert store.heartbeat("w1", "w1-1", "idle", None, warm) is False
    admin.drop_warm()
    assert store.heartbeat("w2", "w2-1", "idle", None, warm) is True, "an admin's: everyone's"
    assert store.heartbeat("w2", "w2-1", "idle", None, warm) is False
