-- ARGV: prefix, '' (no task), now, pools (JSON list), statuses (JSON list)[, n]. Each owner's first (n) task(s) in each
-- of those pools and statuses: a flat list of owner (raw JSON), member, score. First the retries whose delay
-- is over join their owners' sets. O(owners + retries come due), however many tasks wait.
local now = tonumber(ARGV[3])
for _, rid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'retry_due', '-inf', now)) do
  local rkey = P .. 'task:' .. rid
  redis.call('ZREM', P .. 'retry_due', rid)
  if field(rkey, 'status') == 'RETRY' then
    local pool = field(rkey, 'pool') or ''
    local owner_raw = redis.call('HGET', rkey, 'owner') or 'null'
    redis.call('ZADD', heads_key(pool, 'RETRY', owner_raw), -(field(rkey, 'priority') or 0),
      head_member(tonumber(redis.call('HGET', rkey, 'seq')), rid))
    redis.call('SADD', P .. 'head_owners:' .. pool, owner_raw)
  end
end
local wanted = {}
local per_set = tonumber(ARGV[6] or '1')
for _, st in ipairs(cjson.decode(ARGV[5])) do wanted[st] = true end
local out = {}
for _, pool in ipairs(cjson.decode(ARGV[4])) do
  local owners = P .. 'head_owners:' .. pool
  for _, owner_raw in ipairs(redis.call('SMEMBERS', owners)) do
    local any = false
    for st, _ in pairs(WAITING) do
      local hk = heads_key(pool, st, owner_raw)
      if wanted[st] then
        local top = redis.call('ZRANGE', hk, 0, per_set - 1, 'WITHSCORES')
        for k = 1, #top, 2 do
          any = true
          out[#out + 1] = owner_raw
          out[#out + 1] = top[k]
          out[#out + 1] = top[k + 1]
        end
      elseif redis.call('ZCARD', hk) > 0 then
        any = true
      end
    end
    if not any then redis.call('SREM', owners, owner_raw) end
  end
end
return out
