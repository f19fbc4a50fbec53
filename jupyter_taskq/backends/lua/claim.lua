-- ARGV: prefix, id, worker (JSON), instance (JSON), now (JSON), error of a task asked to cancel (JSON)
if not WAITING[status] then return nil end
if (field(key, 'held') or 0) == 1 then return nil end  -- held: the server queues it when it may start
local cancel = field(key, 'cancel_requested')
if cancel == 1 or cancel == true then  -- a cancel is final: asked while it ran, it never runs again
  redis.call('HSET', key, 'status', '"CANCELLED"', 'ended_at', ARGV[5], 'updated_at', ARGV[5], 'error', ARGV[6])
  reindex(id, status)
  return nil
end
redis.call('HSET', key, 'status', '"RUNNING"', 'attempt', tostring((field(key, 'attempt') or 0) + 1),
  'worker', ARGV[3], 'worker_instance', ARGV[4], 'started_at', ARGV[5], 'updated_at', ARGV[5],
  'cancel_requested', '0', 'outputs', 'null', 'progress', 'null')
reindex(id, status)
return redis.call('HGETALL', key)
