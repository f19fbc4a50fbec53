-- ARGV: prefix, id, allowed statuses (JSON list), attempt ('' for any), fields (JSON object)
if not status then return 0 end
local allowed = false
for _, s in ipairs(cjson.decode(ARGV[3])) do if s == status then allowed = true end end
if not allowed then return 0 end
if ARGV[4] ~= '' and tonumber(field(key, 'attempt')) ~= tonumber(ARGV[4]) then return 0 end
set_fields(key, ARGV[5])
reindex(id, status)
return 1
