-- KEYS: the schedules hash; ARGV: schedule id, the record as read, the new record.
-- A compare-and-set of one schedule's whole record (two servers racing: one wins).
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
