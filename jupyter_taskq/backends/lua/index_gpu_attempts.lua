-- Each GPU attempt in 'gpu_attempts' (scored by its end, +inf while it runs; gpu_spans reads it), for a
-- database written before that index: GPU time used before an upgrade still counts for fair share.
-- FLAG: gpu_attempts_indexed
  local gpu = field(tkey, 'gpu')
  if gpu and gpu ~= 0 and gpu ~= false then
    local entries = redis.call('HGETALL', P .. 'attempts:' .. batch[i])
    for j = 1, #entries, 2 do
      local entry = cjson.decode(entries[j + 1])
      if entry['started_at'] and entry['started_at'] ~= cjson.null then
        local score = '+inf'
        if entry['ended_at'] and entry['ended_at'] ~= cjson.null then score = tostring(entry['ended_at']) end
        redis.call('ZADD', P .. 'gpu_attempts', score, batch[i] .. ':' .. entries[j])
      end
    end
  end
