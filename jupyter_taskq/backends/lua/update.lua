-- ARGV: prefix, id, fields (JSON object) -- only for a task that exists
if not status then return 0 end
set_fields(key, ARGV[3])
reindex(id, status)
return 1
