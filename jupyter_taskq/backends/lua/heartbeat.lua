-- ARGV: prefix, name, instance, fields (JSON object) -- a heartbeat from a replaced instance is dropped
local raw = redis.call('HGET', ARGV[1] .. 'workers', ARGV[2])
if not raw then return 0 end
local worker = cjson.decode(raw)
if worker['instance'] ~= ARGV[3] then return 0 end
local drop = worker['drop_warm']
local owners = worker['drop_warm_owners']  -- an object {owner: true}: only their warm processes
worker['drop_warm'] = nil
worker['drop_warm_owners'] = nil
for name, value in pairs(cjson.decode(ARGV[4])) do worker[name] = value end
redis.call('HSET', ARGV[1] .. 'workers', ARGV[2], cjson.encode(worker))
if drop then return 2 end
if owners and next(owners) then return cjson.encode(owners) end
return 1
