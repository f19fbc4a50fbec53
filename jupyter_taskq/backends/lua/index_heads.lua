-- Each waiting task in its owner's waiting set (fair share's heads), for a database written before those sets.
-- FLAG: heads_indexed
  local st = field(tkey, 'status')
  if st and WAITING[st] then
    index_waiting(batch[i], tkey, st, tonumber(batch[i + 1]), field(tkey, 'pool') or '')
  end
