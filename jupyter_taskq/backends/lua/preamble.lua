-- Shared by the task scripts: JSON field access, index upkeep (``reindex``: ``old`` is the task's status
-- before the write) and the task the script is about (ARGV: prefix, id, ...).
local P = ARGV[1]
local function field(key, name)
  local raw = redis.call('HGET', key, name)
  if not raw then return nil end
  local value = cjson.decode(raw)
  if value == cjson.null then return nil end
  return value
end
local FINAL = {COMPLETE=true, CANCELLED=true, TIMEOUT=true, EXPIRED=true, FAILED=true}
local WAITING = {PENDING=true, RETRY=true}
-- Fair share (issue 15): each owner's tasks that may start, per pool and waiting status, in a sorted set
-- scored -priority with members '<seq, 12 digits>:<id>' (equal scores order by member: oldest first), so
-- an owner's next task is its first member; 'head_owners:<pool>' holds the owners (raw JSON) that may have
-- one (emptied lazily by the heads script). A RETRY still in its delay waits in 'retry_due' (scored by its
-- not_before) until the heads script moves it into its owner's set.
local function heads_key(pool, st, owner_raw)
  return P .. 'heads:' .. st .. ':' .. #pool .. ':' .. pool .. ':' .. owner_raw
end
local function head_member(seq, id)
  return string.format('%012d', seq) .. ':' .. id
end
local function index_waiting(id, key, status, seq, pool)
  local owner_raw = redis.call('HGET', key, 'owner') or 'null'
  local member = head_member(seq, id)
  local delayed = status == 'RETRY' and field(key, 'not_before')
  local held = (field(key, 'held') or 0) == 1  -- waiting for dependencies or a start time (issue 24)
  if status == 'PENDING' and held then
    redis.call('ZADD', P .. 'held', seq, id)
  else
    redis.call('ZREM', P .. 'held', id)
  end
  for st, _ in pairs(WAITING) do
    local hk = heads_key(pool, st, owner_raw)
    if st == status and not delayed and not held then
      redis.call('ZADD', hk, -(field(key, 'priority') or 0), member)
      redis.call('SADD', P .. 'head_owners:' .. pool, owner_raw)
    else
      redis.call('ZREM', hk, member)
    end
  end
  if delayed then
    redis.call('ZADD', P .. 'retry_due', delayed, id)
  else
    redis.call('ZREM', P .. 'retry_due', id)
  end
end
-- Each owner's tasks by status ('owned:<status>:<owner raw JSON>', scored by seq; 'owners' holds every owner
-- that had one): the queued-tasks quota, stats' tasks per user and one user's listing read these, so they
-- cost O(owners x statuses) or O(that user's tasks), however many tasks others have.
local function owned_key(st, owner_raw)
  return P .. 'owned:' .. st .. ':' .. owner_raw
end
local function reindex(id, old)
  redis.call('INCR', P .. 'version')
  local key = P .. 'task:' .. id
  local seq = tonumber(redis.call('HGET', key, 'seq'))
  local status = field(key, 'status')
  local pool = field(key, 'pool') or ''
  if old and old ~= status then
    redis.call('ZREM', P .. 'status:' .. old, id)
    redis.call('ZREM', P .. 'pool:' .. pool .. ':' .. old, id)
  end
  redis.call('ZADD', P .. 'status:' .. status, seq, id)
  redis.call('ZADD', P .. 'pool:' .. pool .. ':' .. status, seq, id)
  local owner_raw = redis.call('HGET', key, 'owner') or 'null'
  if old and old ~= status then redis.call('ZREM', owned_key(old, owner_raw), id) end
  redis.call('ZADD', owned_key(status, owner_raw), seq, id)
  redis.call('SADD', P .. 'owners', owner_raw)
  index_waiting(id, key, status, seq, pool)
  local expires_at = field(key, 'expires_at')
  if WAITING[status] and expires_at then
    redis.call('ZADD', P .. 'expiring', expires_at, id)
  else
    redis.call('ZREM', P .. 'expiring', id)
  end
  local ended_at = field(key, 'ended_at')
  if ended_at and (field(key, 'result_expired') or 0) == 0 then
    redis.call('ZADD', P .. 'ended', ended_at + (field(key, 'result_ttl') or 0), id)
  else
    redis.call('ZREM', P .. 'ended', id)
  end
  if FINAL[status] and field(key, 'callback_url') and (field(key, 'callback_done') or 0) == 0 then
    redis.call('ZADD', P .. 'callbacks', seq, id)
  else
    redis.call('ZREM', P .. 'callbacks', id)
  end
  local blob = field(key, 'blob')  -- the tasks naming a blob, while their files are kept
  if blob and (field(key, 'result_expired') or 0) == 0 then
    redis.call('SADD', P .. 'blob:' .. blob, id)
  elseif blob then
    redis.call('SREM', P .. 'blob:' .. blob, id)
  end
end
-- Every task script starts here: the task's id, key and current status (nil: no such task).
local id = ARGV[2]
local key = P .. 'task:' .. id
local status = field(key, 'status')
local function set_fields(key, encoded)
  local fields = cjson.decode(encoded)
  for name, value in pairs(fields) do redis.call('HSET', key, name, value) end
end
