-- ARGV: prefix[, owner] -- every worker ends its warm task processes (only the owner's) at its next heartbeat
local asked = 0
local all = redis.call('HGETALL', ARGV[1] .. 'workers')
for i = 1, #all, 2 do
  local worker = cjson.decode(all[i + 1])
  if ARGV[2] then
    if type(worker['drop_warm_owners']) ~= 'table' then worker['drop_warm_owners'] = {} end
    worker['drop_warm_owners'][ARGV[2]] = true
  else
    worker['drop_warm'] = true
  end
  redis.call('HSET', ARGV[1] .. 'workers', all[i], cjson.encode(worker))
  asked = asked + 1
end
return asked
