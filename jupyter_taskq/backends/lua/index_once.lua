-- A script that indexes the tasks of a database written before an index existed, ``limit`` tasks a call
-- (Redis answers others in between): ARGV: prefix, '' (no task), after (a seq), limit; answers the last seq
-- indexed, -1 when done (then ``flag`` is set). ``per_task`` indexes the task ``batch[i]`` (hash ``tkey``,
-- seq ``batch[i + 1]``). Tasks written meanwhile are indexed by their own scripts; indexing one twice
-- changes nothing.
-- A template: redis_store.py puts in the flag of each index_*.lua script and its lines per task.
if redis.call('EXISTS', P .. 'FLAG') == 1 then return -1 end
local batch = redis.call('ZRANGEBYSCORE', P .. 'tasks', '(' .. ARGV[3], '+inf', 'WITHSCORES', 'LIMIT', 0,
  tonumber(ARGV[4]))
if #batch == 0 then
  redis.call('SET', P .. 'FLAG', '1')
  return -1
end
for i = 1, #batch, 2 do
  local tkey = P .. 'task:' .. batch[i]
PER_TASK
end
return tonumber(batch[#batch])
