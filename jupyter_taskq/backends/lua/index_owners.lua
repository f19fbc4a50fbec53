-- Each task by owner, for a database written before the per-owner sets.
-- FLAG: owners_indexed
  local st = field(tkey, 'status')
  if st then
    local owner_raw = redis.call('HGET', tkey, 'owner') or 'null'
    redis.call('ZADD', owned_key(st, owner_raw), batch[i + 1], batch[i])
    redis.call('SADD', P .. 'owners', owner_raw)
  end
