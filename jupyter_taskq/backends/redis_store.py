"""Task state in Redis, for a queue shared by several machines.

Same contract (``taskstore.TaskStore``) as :class:`~jupyter_taskq.backends.sqlite_store.SqliteTaskStore`.
A task is one hash (each field JSON-encoded); sorted sets scored by creation order index it by status
and by pool, and by the times the reaper asks about (expiry, result TTL, webhooks); for fair share, each
owner's waiting tasks by priority and age, and each GPU attempt by its end (issue 15).
Every write is one Lua script that checks the task's status, changes the hash and
moves the task between indexes, so a change is atomic and conditional exactly as a
``WHERE status IN (...)`` UPDATE is in SQLite. The scripts are in ``lua/*.lua``.
"""

from __future__ import annotations

import builtins
import json
import re
import time
from importlib import resources
from typing import Any, cast
from collections.abc import Iterable

from .. import attempts as attempt_log
from ..status import FINAL, WAITING, TaskStatus
from .base import BackendRefused
from .taskstore import CANCELLED_AT_CLAIM, TASK_DEFAULTS, USAGE_KEPT, TaskStore, JSON_COLUMNS, stored_not_before

def lua_source(name: str) -> str:
    """The text of ``lua/<name>.lua`` (package data, so it ships in the wheel)."""
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def _task_script(name: str) -> str:
    """A script about one task: the shared preamble (JSON field access, index upkeep, the task's key and
    status from ARGV: prefix, id, ...) and then its own lines."""
    return lua_source("preamble") + lua_source(name)


def _index_script(name: str) -> str:
    """A script that indexes, a step at a time, the tasks of a database written before an index existed:
    ``index_once.lua`` with the flag named in ``<name>.lua`` (``-- FLAG: ...``) and its lines per task."""
    per_task = lua_source(name)
    found = re.search(r"^-- FLAG: (\w+)$", per_task, re.M)
    if found is None:
        raise ValueError(f"{name}.lua names no flag (a line '-- FLAG: ...')")
    flag = found.group(1)
    return lua_source("preamble") + lua_source("index_once").replace("FLAG", flag).replace("PER_TASK", per_task)


def _encode(column: str, value: Any) -> str:
    if isinstance(value, TaskStatus):
        value = value.value
    if column in JSON_COLUMNS and isinstance(value, str):
        value = json.loads(value)
    return json.dumps(value)


def _encode_fields(fields: dict) -> str:
    return json.dumps({k: _encode(k, v) for k, v in fields.items()})


def _matches(task: dict, text: str | None) -> bool:
    return not text or text.lower() in (task.get("name") or "").lower() or text.lower() in task["id"].lower()


def _decode(raw: dict) -> dict:
    task = dict(TASK_DEFAULTS)
    for key, value in raw.items():
        key = key.decode() if isinstance(key, bytes) else key
        if key != "seq":
            task[key] = json.loads(value)
    return task


class VolatileRedis(BackendRefused):
    """The Redis server keeps nothing on disk: a restart of it would lose every task."""


def persistence(client) -> dict:
    """``{"aof": bool, "rdb": bool}`` as the Redis server is configured now (CONFIG GET, else INFO)."""
    try:
        config = client.config_get("appendonly")
        config.update(client.config_get("save"))
        return {"aof": str(config.get("appendonly", "no")).lower() == "yes",
                "rdb": bool(str(config.get("save", "")).strip())}
    except Exception:  # noqa: BLE001 - CONFIG is often disabled on managed Redis: INFO still tells of AOF
        info = client.info("persistence")
        return {"aof": bool(info.get("aof_enabled")), "rdb": None}


def check_persistence(url: str, allow_volatile: bool = False) -> dict:
    """Refuse a Redis that would lose the queue on restart (neither AOF nor RDB), unless allowed."""
    import redis

    found = persistence(redis.Redis.from_url(url))
    if found["aof"] or found["rdb"] or allow_volatile:
        return found
    unknown = found["rdb"] is None
    raise VolatileRedis(
        "the Redis server at the queue's redis_url has no persistence "
        + ("(AOF is off, and CONFIG is disabled so RDB snapshots cannot be checked)" if unknown else
           "(appendonly no, and no RDB 'save' points)")
        + ": a restart of Redis would lose every queued, running and finished task, silently. Turn on AOF "
          "(`appendonly yes`, `appendfsync everysec` in redis.conf; see docs/multi-machine.md), or, if losing the "
          "queue is acceptable (a throwaway test queue), set c.TaskQueue.redis_allow_volatile = True.")


# redis-py types its replies ``bytes | str``: decoded or not depends on how the client was made. This store's
# client never decodes (no ``decode_responses``), so its members come back as bytes; the casts below say so.
_Members = list[bytes]
_Scored = list[tuple[bytes, float]]  # withscores=True

CREATE_CHUNK = 500  # tasks per MULTI in create_many: Redis answers other clients between chunks
INDEX_STEP = 2000  # tasks per script when an older database is indexed by owner


class RedisTaskStore(TaskStore):
    """Task state and worker heartbeats in one Redis database, under ``prefix``."""

    def __init__(self, url: str, prefix: str = "jtq:"):
        import redis  # only a Redis-backed queue needs it

        self.url = url
        self.prefix = prefix
        self.redis = redis.Redis.from_url(url)
        scripts = {name: _task_script(name) for name in ("create", "transition", "claim", "update", "delete", "heads")}
        scripts |= {name: lua_source(name) for name in ("heartbeat", "drop_warm")}
        scripts |= {name: _index_script(name) for name in ("index_heads", "index_owners", "index_notebooks",
                                                           "index_gpu_attempts")}
        self._scripts = {name: self.redis.register_script(src) for name, src in scripts.items()}
        self._heads_indexed = False
        self._owners_indexed = False
        self._gpu_attempts_indexed = False
        self._notebooks_indexed = False

    def close(self) -> None:
        self.redis.close()

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _run(self, script: str, *args: Any):
        return self._scripts[script](args=[self.prefix, *args])

    def _fetch(self, ids: Iterable) -> builtins.list[dict]:
        pipe = self.redis.pipeline(transaction=False)
        for task_id in ids:
            pipe.hgetall(self._key("task", task_id.decode() if isinstance(task_id, bytes) else task_id))
        return [_decode(raw) for raw in pipe.execute() if raw]

    # -- tasks ------------------------------------------------------------
    def create(self, task: dict) -> None:
        self._run("create", task["id"], _encode_fields(task))

    def create_many(self, tasks: builtins.list[dict]) -> None:
        """A batch in transactions of :data:`CREATE_CHUNK` tasks, all or nothing.

        One ``MULTI`` of 15,000 Lua calls held Redis (every worker's heartbeat, every other
        request) for seconds; between chunks other clients' commands run. A batch that fails
        part-way (a task that exists, a lost connection) has the tasks it created deleted
        before the error is raised, as SQLite's one transaction rolls back. Until it returns,
        a listing may show part of the batch; the service queues none of it on Huey before then.
        """
        if not tasks:
            return
        first_seq = int(self.redis.get(self._key("seq")) or 0)  # what this call creates comes after
        try:
            for start in range(0, len(tasks), CREATE_CHUNK):
                pipe = self.redis.pipeline(transaction=True)
                for task in tasks[start:start + CREATE_CHUNK]:
                    self._scripts["create"](args=[self.prefix, task["id"], _encode_fields(task)], client=pipe)
                pipe.execute()
        except BaseException:
            self._undo_create([t["id"] for t in tasks[:start + CREATE_CHUNK]], first_seq)
            raise

    def _undo_create(self, ids: builtins.list[str], first_seq: int) -> None:
        """Delete those of ``ids`` created after ``first_seq`` (not a task that existed before: a
        duplicate id is refused by the create script). Best effort: if Redis is unreachable now,
        what stayed is waiting without a Huey message, and the server's ``reconcile()`` queues it
        later although the client was answered an error."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            for task_id in ids:
                pipe.hget(self._key("task", task_id), "seq")
            ours = [i for i, seq in zip(ids, pipe.execute()) if seq is not None and int(seq) > first_seq]
            for start in range(0, len(ours), CREATE_CHUNK):
                pipe = self.redis.pipeline(transaction=False)
                for task_id in ours[start:start + CREATE_CHUNK]:
                    self._scripts["delete"](args=[self.prefix, task_id], client=pipe)
                pipe.execute()
        except Exception:  # the original error is the one to report
            pass

    def get(self, task_id: str) -> dict | None:
        found = self._fetch([task_id])
        return found[0] if found else None

    def list(self, statuses=None, limit=50, offset=0, ids=None, text=None, owner=None) -> builtins.list[dict]:
        wanted = {str(s) for s in statuses} if statuses else None
        if owner is not None and ids is None:  # one user's tasks: ids of the rest filtered out, then paged
            return self._fetch(self._owned(wanted, text, owner, first=offset + limit)[offset:offset + limit])
        if owner is not None:
            return [t for t in self.list(statuses, limit=len(list(ids)) or 1, ids=ids, text=text)
                    if t["owner"] == owner][offset:offset + limit]
        if ids is not None:
            tasks = [t for t in self._fetch_with_seq(ids) if (wanted is None or t[1]["status"] in wanted)
                     and _matches(t[1], text)]
            tasks.sort(key=lambda pair: pair[0], reverse=True)
            return [t for _, t in tasks[offset:offset + limit]]
        if text:
            members = self._text_matches(wanted, text)
            return self._fetch(members[offset:offset + limit])
        if wanted is None:
            return self._fetch(self.redis.zrevrange(self._key("tasks"), offset, offset + limit - 1))
        # Newest first across several statuses: merge the head of each status index.
        scored: _Scored = []
        for status in wanted:
            scored += cast(_Scored, self.redis.zrevrange(self._key("status", status), 0, offset + limit - 1,
                                                         withscores=True))
        scored.sort(key=lambda pair: pair[1], reverse=True)
        return self._fetch(member for member, _ in scored[offset:offset + limit])

    def _text_matches(self, wanted: set[str] | None, text: str) -> builtins.list[bytes]:
        """Ids (newest first) whose name or id contains ``text``: one read of the name index."""
        needle = text.lower()
        hits = {i for i, name in cast("dict[bytes, bytes]", self.redis.hgetall(self._key("names"))).items()
                if needle in name.decode(errors="replace") or needle in i.decode().lower()}
        indexes = [self._key("tasks")] if wanted is None else [self._key("status", s) for s in wanted]
        scored = [pair for index in indexes for pair in cast(_Scored, self.redis.zrange(index, 0, -1, withscores=True))
                  if pair[0] in hits]
        scored.sort(key=lambda pair: pair[1], reverse=True)
        return [member for member, _ in scored]

    def _fetch_with_seq(self, ids) -> builtins.list[tuple[int, dict]]:
        pipe = self.redis.pipeline(transaction=False)
        for task_id in ids:
            pipe.hgetall(self._key("task", task_id))
        return [(int(raw[b"seq"]), _decode(raw)) for raw in pipe.execute() if raw]

    def statuses(self, ids) -> dict[str, str]:
        ids = list(ids)
        pipe = self.redis.pipeline(transaction=False)
        for task_id in ids:
            pipe.hget(self._key("task", task_id), "status")
        return {task_id: json.loads(raw) for task_id, raw in zip(ids, pipe.execute()) if raw is not None}

    def ended_times(self, ids) -> dict[str, float]:
        ids = list(ids)
        pipe = self.redis.pipeline(transaction=False)
        for task_id in ids:
            pipe.hget(self._key("task", task_id), "ended_at")
        ended = {task_id: json.loads(raw) for task_id, raw in zip(ids, pipe.execute()) if raw is not None}
        return {task_id: at for task_id, at in ended.items() if at is not None}

    def _index_owners(self) -> None:
        """A database from before the per-owner sets is indexed by owner once (in steps), before they are read."""
        if not self._owners_indexed:
            self._index_once("index_owners")
            self._owners_indexed = True

    def _index_once(self, script: str) -> None:
        """Runs an indexing script (:func:`_index_once`) until it says every task is indexed."""
        after = 0
        while (after := self._run(script, "", after, INDEX_STEP)) >= 0:
            pass

    def cell_counts(self, notebooks, owner=None) -> dict[str, dict[str, int]]:
        """From the per-notebook index: O(that notebook's tasks), however many tasks others have."""
        if not self._notebooks_indexed:
            self._index_once("index_notebooks")
            self._notebooks_indexed = True
        ids = {member for notebook in notebooks
               for member in cast(_Members, self.redis.zrange(self._key("notebook", json.dumps(notebook)), 0, -1))}
        pipe = self.redis.pipeline(transaction=False)
        for member in ids:
            pipe.hmget(self._key("task", member.decode()), "cell_id", "status", "owner")
        counts: dict[str, dict[str, int]] = {}
        for cell_raw, status_raw, owner_raw in (pipe.execute() if ids else []):
            cell_id = json.loads(cell_raw) if cell_raw else None
            if not cell_id or status_raw is None or (owner is not None and json.loads(owner_raw or "null") != owner):
                continue
            status = json.loads(status_raw)
            cell = counts.setdefault(cell_id, {})
            cell[status] = cell.get(status, 0) + 1
        return counts

    def _owned_keys(self, wanted: set[str] | None, owner: str | None) -> builtins.list[str]:
        self._index_owners()
        raw = json.dumps(owner)
        return [self._key("owned", status, raw) for status in (wanted or [s.value for s in TaskStatus])]

    def _owned(self, wanted: set[str] | None, text: str | None, owner: str,
               first: int | None = None) -> builtins.list[bytes]:
        """Ids (newest first) of ``owner``'s tasks (the ``first`` of them; None: all): from their per-owner
        indexes, O(their tasks); with ``text``, the matches' owner fields are read (O(matches))."""
        if text:
            members = self._text_matches(wanted, text)
            pipe = self.redis.pipeline(transaction=False)
            for member in members:
                pipe.hget(self._key("task", member.decode()), "owner")
            mine = json.dumps(owner).encode()
            return [member for member, raw in zip(members, pipe.execute() if members else []) if raw == mine]
        end = -1 if first is None else first - 1
        scored = [pair for index in self._owned_keys(wanted, owner)
                  for pair in cast(_Scored, self.redis.zrevrange(index, 0, end, withscores=True))]
        scored.sort(key=lambda pair: pair[1], reverse=True)
        return [member for member, _ in scored[:first]]

    def count(self, statuses=None, text=None, owner=None) -> int:
        if owner is not None and text:
            return len(self._owned({str(s) for s in statuses} if statuses else None, text, owner))
        if owner is not None:  # O(statuses): the queued-tasks quota asks this at every submission
            pipe = self.redis.pipeline(transaction=False)
            for index in self._owned_keys({str(s) for s in statuses} if statuses else None, owner):
                pipe.zcard(index)
            return sum(pipe.execute())
        if text:
            return len(self._text_matches({str(s) for s in statuses} if statuses else None, text))
        if not statuses:
            return self.redis.zcard(self._key("tasks"))
        pipe = self.redis.pipeline(transaction=False)
        for status in {str(s) for s in statuses}:
            pipe.zcard(self._key("status", status))
        return sum(pipe.execute())

    def fingerprint(self) -> tuple:
        """Every write bumps one counter: O(1), however many tasks there are."""
        return tuple(self.redis.mget(self._key("version"), self._key("seq")))

    def counts_by_status(self) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for status in TaskStatus:
            pipe.zcard(self._key("status", status.value))
        return {status.value: n for status, n in zip(TaskStatus, pipe.execute())}

    def counts_by_owner(self) -> dict[str | None, dict[str, int]]:
        """From the per-owner indexes: O(owners x statuses)."""
        self._index_owners()
        owners = list(cast("set[bytes]", self.redis.smembers(self._key("owners"))))
        pipe = self.redis.pipeline(transaction=False)
        for raw in owners:
            for status in TaskStatus:
                pipe.zcard(self._key("owned", status.value, raw.decode()))
        counts, width = pipe.execute() if owners else [], len(TaskStatus)
        found: dict[str | None, dict[str, int]] = {}
        for i, raw in enumerate(owners):
            mine = {status.value: n for status, n in zip(TaskStatus, counts[i * width:(i + 1) * width]) if n}
            if mine:
                found[json.loads(raw)] = mine
        return found

    def waiting_by_pool(self) -> dict[str, int]:
        pools = sorted(p.decode() for p in cast("set[bytes]", self.redis.smembers(self._key("pools"))))
        pipe = self.redis.pipeline(transaction=False)
        for pool in pools:
            for status in WAITING:
                pipe.zcard(self._key("pool", pool, status.value))
        counts = pipe.execute()
        width = len(WAITING)
        result = {pool: sum(counts[i * width:(i + 1) * width]) for i, pool in enumerate(pools)}
        return {pool: n for pool, n in result.items() if n}

    # -- per owner (issue 15): indexed, so a worker's fair-share turn costs O(owners + running tasks) --------
    def _date_old_retries(self) -> None:
        """A RETRY written before ``not_before`` existed would start at once under fair share: it gets the end
        of its retry delay (:func:`~jupyter_taskq.backends.taskstore.stored_not_before`), which also moves it to
        ``retry_due`` until then. O(tasks in RETRY), once per store object."""
        ids = [i.decode() for i in cast(_Members, self.redis.zrange(self._key("status", "RETRY"), 0, -1))]
        names = ("not_before", "attempt", "retry_delay", "retry_backoff", "updated_at")
        pipe = self.redis.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(self._key("task", task_id), *names)
        for task_id, raw in zip(ids, pipe.execute() if ids else []):
            task = {name: json.loads(v) if v is not None else None for name, v in zip(names, raw)}
            not_before = stored_not_before(task) if task["not_before"] is None else None
            if not_before is not None and isinstance(task["attempt"], int):
                self._run("transition", task_id, json.dumps(["RETRY"]), str(task["attempt"]),
                          _encode_fields({"not_before": not_before}))

    def _ensure_heads_indexed(self) -> None:
        """Index the waiting heads of a database from before that index, once per store object."""
        if not self._heads_indexed:
            self._date_old_retries()
            self._index_once("index_heads")
            self._heads_indexed = True

    def waiting_heads(self, pools, statuses=WAITING, now=None) -> builtins.list[dict]:
        self._ensure_heads_indexed()
        now = time.time() if now is None else now
        reply = self._run("heads", "", json.dumps(now), json.dumps(list(pools)),
                          json.dumps([str(s) for s in statuses]))
        best: dict[bytes, tuple[float, bytes]] = {}
        for i in range(0, len(reply), 3):
            owner_raw, member, score = reply[i], reply[i + 1], float(reply[i + 2])
            if owner_raw not in best or (score, member) < best[owner_raw]:
                best[owner_raw] = (score, member)
        heads = [{"id": member.decode().partition(":")[2], "owner": json.loads(owner_raw), "priority": int(-score)}
                 for owner_raw, (score, member) in best.items()]
        pipe = self.redis.pipeline(transaction=False)
        for head in heads:
            pipe.hget(self._key("task", head["id"]), "created_at")
        for head, raw in zip(heads, pipe.execute() if heads else []):
            head["created_at"] = json.loads(raw) if raw else None
        return heads

    def running_gpus_by_owner(self) -> dict[str | None, int]:
        pipe = self.redis.pipeline(transaction=False)
        for task_id in cast(_Members, self.redis.zrange(self._key("status", "RUNNING"), 0, -1)):
            pipe.hmget(self._key("task", task_id.decode()), "owner", "gpu")
        held: dict[str | None, int] = {}
        for owner, gpu in pipe.execute():
            if gpu is not None and json.loads(gpu):
                owner = json.loads(owner) if owner is not None else None
                held[owner] = held.get(owner, 0) + int(json.loads(gpu))  # a gpu=N task holds N
        return held

    def waiting_gpu_tasks(self, pools, now=None, limit=200) -> builtins.list[dict]:
        self._ensure_heads_indexed()
        now = time.time() if now is None else now
        reply = self._run("heads", "", json.dumps(now), json.dumps(list(pools)),
                          json.dumps([str(s) for s in WAITING]), str(limit))
        entries = sorted((float(reply[i + 2]), reply[i + 1]) for i in range(0, len(reply), 3))[:limit]
        ids = [member.decode().partition(":")[2] for _score, member in entries]
        return [{k: t[k] for k in ("id", "owner", "priority", "created_at", "pool", "gpu", "timeout")}
                for t in self._fetch(ids)]

    def gpu_spans(self, since) -> builtins.list[tuple[str | None, float, float | None]]:
        """From ``gpu_attempts`` (each GPU attempt, scored by its end, +inf while it runs): O(attempts since)."""
        if not self._gpu_attempts_indexed:
            self._index_once("index_gpu_attempts")
            self._gpu_attempts_indexed = True
        attempts = cast(_Members, self.redis.zrangebyscore(self._key("gpu_attempts"), since, "+inf"))
        members = [m.decode() for m in attempts]
        pipe = self.redis.pipeline(transaction=False)
        for member in members:
            task_id, _, attempt = member.rpartition(":")
            pipe.hget(self._key("attempts", task_id), attempt)
            pipe.hmget(self._key("task", task_id), "owner", "gpu")
        replies = pipe.execute() if members else []
        spans = self._deleted_spans(since)
        for entry, (owner, gpu) in zip(replies[::2], replies[1::2]):
            if entry is None or owner is None:
                continue  # deleted meanwhile: the ledger has it
            entry = json.loads(entry)
            if entry.get("started_at"):  # a gpu=N task's attempt counts N times
                times = int(json.loads(gpu or "1") or 1)
                spans += [(json.loads(owner), entry["started_at"], entry.get("ended_at"))] * times
        return spans

    def transition(self, task_id, to, only_from, attempt=None, **fields) -> bool:
        now = time.time()
        fields.setdefault("updated_at", now)
        if to in FINAL:
            fields.setdefault("ended_at", now)
        fields["status"] = str(to)
        sources = [str(s) for s in only_from]
        moved = self._run("transition", task_id, json.dumps(sources), "" if attempt is None else str(attempt),
                          _encode_fields(fields)) == 1
        if moved and "RUNNING" in sources and str(to) != "RUNNING":  # the attempt ended
            self._end_attempt(task_id, attempt, now, str(to), fields.get("error"))
        return moved

    # -- attempt history (jupyter_taskq/attempts.py): a hash per task, attempt number -> JSON -------------
    def _start_attempt(self, task: dict, worker: str, now: float) -> None:
        raw = self.redis.hget(self._key("workers"), worker)
        device = attempt_log.device_label(json.loads(raw) if raw else None)
        entry = attempt_log.record(task["id"], task["attempt"], worker, device, now)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self._key("attempts", task["id"]), str(task["attempt"]), json.dumps(entry))
        self._index_event(pipe, "started", f"{task['id']}:{task['attempt']}", now)
        if task["gpu"]:  # its GPU time (gpu_spans), open while it runs
            pipe.zadd(self._key("gpu_attempts"), {f"{task['id']}:{task['attempt']}": float("inf")})
        pipe.execute()

    def _end_attempt(self, task_id: str, attempt: int | None, now: float, status: str, error) -> None:
        key = self._key("attempts", task_id)
        if attempt is None:
            raw = self.redis.hget(self._key("task", task_id), "attempt")
            attempt = json.loads(raw) if raw else None
        raw = self.redis.hget(key, str(attempt)) if attempt is not None else None
        if raw:
            entry = json.loads(raw)
            if entry.get("ended_at") is None:
                entry.update(ended_at=now, status=status, reason=attempt_log.exit_reason(status, error), error=error)
                spans = self._key("gpu_attempts")
                pipe = self.redis.pipeline(transaction=False)
                pipe.hset(key, str(attempt), json.dumps(entry))
                pipe.zadd(spans, {f"{task_id}:{attempt}": now}, xx=True)  # only a GPU attempt is there
                pipe.zremrangebyscore(spans, "-inf", f"({now - USAGE_KEPT}")
                self._index_event(pipe, "ended", f"{task_id}:{attempt}", now)
                pipe.execute()

    def _index_event(self, pipe, kind: str, member: str, at: float) -> None:
        """Each attempt by its start and by its end (attempt_events reads them), kept as long as GPU spans."""
        key = self._key("attempt_events", kind)
        pipe.zadd(key, {member: at})
        pipe.zremrangebyscore(key, "-inf", f"({at - USAGE_KEPT}")

    def attempt_events(self, kind, since, limit) -> builtins.list[dict]:
        members = [m.decode() for m in cast(_Members, self.redis.zrangebyscore(
            self._key("attempt_events", {"started": "started", "ended": "ended"}[kind]), since, "+inf", 0, limit))]
        pipe = self.redis.pipeline(transaction=False)
        for member in members:
            task_id, _, attempt = member.rpartition(":")
            pipe.hget(self._key("attempts", task_id), attempt)
            pipe.hmget(self._key("task", task_id), "pool", "owner", "created_at", "gpu", "ready_at")
        replies = pipe.execute() if members else []
        events = []
        for entry, fields in zip(replies[::2], replies[1::2]):
            if entry is None or fields[0] is None:
                continue  # deleted meanwhile
            entry = json.loads(entry)
            pool, owner, created_at, gpu, ready_at = (json.loads(f) if f is not None else None for f in fields)
            events.append({**{k: entry.get(k) for k in ("task_id", "attempt", "device", "started_at", "ended_at",
                                                        "status", "reason")},
                           "pool": pool, "owner": owner, "created_at": created_at, "gpu": gpu,
                           "ready_at": ready_at})
        return events

    def attempts(self, task_id) -> builtins.list[dict]:
        entries = [json.loads(v) for v in self.redis.hvals(self._key("attempts", task_id))]
        return sorted(entries, key=lambda e: e["attempt"])

    def claim(self, task_id, worker, worker_instance) -> dict | None:
        now = time.time()
        reply = self._run("claim", task_id, json.dumps(worker), json.dumps(worker_instance), json.dumps(now),
                          _encode("error", CANCELLED_AT_CLAIM))
        if not reply:
            return None
        task = _decode(dict(zip(reply[::2], reply[1::2])))
        self._start_attempt(task, worker, now)
        return task

    def release(self, task_id, attempt) -> bool:
        fields = {"status": "PENDING", "attempt": attempt - 1, "worker": None, "worker_instance": None,
                  "started_at": None, "updated_at": time.time()}
        released = self._run("transition", task_id, json.dumps(["RUNNING"]), str(attempt), _encode_fields(fields)) == 1
        if released:  # handed back uncounted: no attempt happened
            self.redis.hdel(self._key("attempts", task_id), str(attempt))
            self.redis.zrem(self._key("gpu_attempts"), f"{task_id}:{attempt}")
            self.redis.zrem(self._key("attempt_events", "started"), f"{task_id}:{attempt}")
        return released

    def request_cancel(self, task_id) -> bool:
        return self._run("transition", task_id, json.dumps(["RUNNING"]), "",
                         _encode_fields({"cancel_requested": 1, "updated_at": time.time()})) == 1

    def cancel_requested(self, task_id) -> bool:
        raw = self.redis.hget(self._key("task", task_id), "cancel_requested")
        return bool(raw and json.loads(raw))

    def update_fields(self, task_id, **fields) -> None:
        fields.setdefault("updated_at", time.time())
        self._run("update", task_id, _encode_fields(fields))

    def delete(self, task_id) -> bool:
        task, now = self.get(task_id), time.time()
        if task and task["gpu"]:  # its GPU time still counts a while (fair share)
            ledger = {json.dumps([task["owner"], a["started_at"], a.get("ended_at") or now, task_id, a["attempt"],
                                  int(task["gpu"])]):
                      a.get("ended_at") or now for a in self.attempts(task_id) if a.get("started_at")}
            if ledger:
                self.redis.zadd(self._key("gpu_ledger"), ledger)
            self.redis.zremrangebyscore(self._key("gpu_ledger"), "-inf", f"({now - USAGE_KEPT}")
        attempts = cast(_Members, self.redis.hkeys(self._key("attempts", task_id)))
        if attempts:
            members = [f"{task_id}:{a.decode()}" for a in attempts]
            self.redis.zrem(self._key("gpu_attempts"), *members)
            for kind in ("started", "ended"):
                self.redis.zrem(self._key("attempt_events", kind), *members)
        self.redis.delete(self._key("attempts", task_id))
        return self._run("delete", task_id) == 1

    def _deleted_spans(self, since) -> builtins.list[tuple[str | None, float, float | None]]:
        spans = []
        for m in cast(_Members, self.redis.zrangebyscore(self._key("gpu_ledger"), since, "+inf")):
            entry = json.loads(m)
            spans += [tuple(entry[:3])] * (int(entry[5]) if len(entry) > 5 else 1)  # a gpu=N task's N
        return spans

    def running(self) -> builtins.list[dict]:
        return self._fetch(self.redis.zrange(self._key("status", "RUNNING"), 0, -1))

    def held(self, limit: int = 5000) -> builtins.list[dict]:
        return [t for t in self._fetch(self.redis.zrange(self._key("held"), 0, limit - 1))
                if t["status"] == TaskStatus.PENDING.value and t.get("held")]

    def overdue_waiting(self, now) -> builtins.list[str]:
        ids = [i.decode() for i in cast(_Members, self.redis.zrangebyscore(self._key("expiring"), "-inf", f"({now}"))]
        return [i for i, status in self.statuses(ids).items() if status in {s.value for s in WAITING}]

    def results_older_than(self, ended_before) -> builtins.list[str]:
        ended = cast(_Members, self.redis.zrangebyscore(self._key("ended"), "-inf", f"({ended_before}"))
        return [i.decode() for i in ended]

    def finished_before(self, ended_before, limit=5000) -> builtins.list[str]:
        """The oldest-created ``limit`` tasks of each final status, those that ended before ``ended_before``
        (tasks end roughly in the order they were made; the rest are found at a later clean-up)."""
        ids: _Members = []
        for status in FINAL:
            ids += cast(_Members, self.redis.zrange(self._key("status", status.value), 0, limit - 1))
        pipe = self.redis.pipeline(transaction=False)
        for task_id in ids:
            pipe.hget(self._key("task", task_id.decode()), "ended_at")
        ended = pipe.execute() if ids else []
        return [i.decode() for i, e in zip(ids, ended) if e is not None and (json.loads(e) or 0) < ended_before][:limit]

    def blob_refs(self, key) -> int:
        return self.redis.scard(self._key("blob", key))

    def add_blob_owner(self, key, owner) -> bool:
        return self.redis.sadd(self._key("blob_owners", key), owner) == 1

    def blob_owned(self, key, owner) -> bool:
        return bool(self.redis.sismember(self._key("blob_owners", key), owner))

    def forget_blob(self, key) -> None:
        self.redis.delete(self._key("blob_owners", key))

    def callbacks_due(self) -> builtins.list[str]:
        return [i.decode() for i in cast(_Members, self.redis.zrange(self._key("callbacks"), 0, -1))]

    # -- task tokens (a key each, so one left behind by a lost worker expires by itself) ------------
    TASK_TOKEN_TTL = 7 * 86400

    def add_task_token(self, digest, task_id, attempt, owner) -> None:
        self.redis.set(self._key("task_token", digest), json.dumps({"task_id": task_id, "attempt": attempt,
                                                                    "owner": owner}), ex=self.TASK_TOKEN_TTL)

    def task_token(self, digest) -> dict | None:
        raw = self.redis.get(self._key("task_token", digest))
        return json.loads(raw) if raw else None

    def delete_task_token(self, digest) -> None:
        self.redis.delete(self._key("task_token", digest))

    # -- workers ----------------------------------------------------------
    def register_worker(self, worker: dict) -> None:
        self.redis.hset(self._key("workers"), worker["name"], json.dumps(worker))

    def heartbeat(self, name, instance, state, current_task, warm=None, gpus=None) -> bool | tuple[str, ...]:
        answer = self._scripts["heartbeat"](args=[self.prefix, name, instance, json.dumps(
            {"heartbeat_at": time.time(), "state": state, "current_task": current_task, "warm": warm or [],
             "gpus": gpus or False})])
        if isinstance(answer, bytes):  # the owners whose warm processes to drop
            return tuple(sorted(json.loads(answer)))
        return answer == 2

    def request_drop_warm(self, owner=None) -> int:
        return int(self._scripts["drop_warm"](args=[self.prefix] + ([owner] if owner is not None else [])))

    def workers(self) -> builtins.list[dict]:
        found = [json.loads(v) for v in self.redis.hvals(self._key("workers"))]
        return sorted(found, key=lambda w: w["name"])

    def remove_worker(self, name, instance=None) -> None:
        if instance is None:
            self.redis.hdel(self._key("workers"), name)
            return
        raw = self.redis.hget(self._key("workers"), name)
        if raw and json.loads(raw).get("instance") == instance:
            self.redis.hdel(self._key("workers"), name)
