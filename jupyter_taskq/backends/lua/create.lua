-- ARGV: prefix, id, fields (JSON object of JSON-encoded values)
if status then return redis.error_reply('task ' .. id .. ' exists') end
local seq = redis.call('INCR', P .. 'seq')
if seq == 1 then  -- a new database: indexed from the start
  redis.call('SET', P .. 'heads_indexed', '1')
  redis.call('SET', P .. 'owners_indexed', '1')
  redis.call('SET', P .. 'notebooks_indexed', '1')
  redis.call('SET', P .. 'gpu_attempts_indexed', '1')
end
set_fields(key, ARGV[3])
redis.call('HSET', key, 'seq', seq)
redis.call('ZADD', P .. 'tasks', seq, id)
local notebook_raw = redis.call('HGET', key, 'notebook')
if notebook_raw and notebook_raw ~= 'null' then redis.call('ZADD', P .. 'notebook:' .. notebook_raw, seq, id) end
redis.call('HSET', P .. 'names', id, string.lower(field(key, 'name') or ''))
redis.call('SADD', P .. 'pools', field(key, 'pool') or '')
reindex(id, nil)
return seq
