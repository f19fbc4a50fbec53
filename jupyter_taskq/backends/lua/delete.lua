-- ARGV: prefix, id
if not status then return 0 end
local pool = field(key, 'pool') or ''
local blob = field(key, 'blob')
if blob then redis.call('SREM', P .. 'blob:' .. blob, id) end
local owner_raw = redis.call('HGET', key, 'owner') or 'null'
local member = head_member(tonumber(redis.call('HGET', key, 'seq')), id)
for st, _ in pairs(WAITING) do redis.call('ZREM', heads_key(pool, st, owner_raw), member) end
redis.call('ZREM', P .. 'retry_due', id)
redis.call('ZREM', P .. 'held', id)
redis.call('ZREM', owned_key(status, owner_raw), id)
local notebook_raw = redis.call('HGET', key, 'notebook')
if notebook_raw and notebook_raw ~= 'null' then redis.call('ZREM', P .. 'notebook:' .. notebook_raw, id) end
redis.call('DEL', key)
redis.call('INCR', P .. 'version')
redis.call('HDEL', P .. 'names', id)
redis.call('ZREM', P .. 'tasks', id)
redis.call('ZREM', P .. 'status:' .. status, id)
redis.call('ZREM', P .. 'pool:' .. pool .. ':' .. status, id)
for _, index in ipairs({'expiring', 'ended', 'callbacks'}) do redis.call('ZREM', P .. index, id) end
return 1
