-- Each task by notebook ('notebook:<raw JSON path>', scored by seq; cell_counts reads it), for a database
-- written before that index.
-- FLAG: notebooks_indexed
  local notebook_raw = redis.call('HGET', tkey, 'notebook')
  if notebook_raw and notebook_raw ~= 'null' then
    redis.call('ZADD', P .. 'notebook:' .. notebook_raw, batch[i + 1], batch[i])
  end
