"""The Lua scripts the status store runs: each one a step that must be atomic in Redis."""

# The per-account count and bytes of e-mails not yet final (keys.PENDING_EMAILS_KEY and
# PENDING_BYTES_KEY, hashes by owner). A record is counted while it holds the field 'pending':
# CREATE and REQUEUE set it with the counts, settle() takes it away with them, in the same step
# as the change that makes the e-mail final. So a repeated or retried outcome can never count
# an e-mail down twice, and no crash can leave a count without its record's mark.
SETTLE = """
local function settle(key, emails, bytes)
  if redis.call('HDEL', key, 'pending') == 0 then return end
  local owner, size = unpack(redis.call('HMGET', key, 'owner', 'size'))
  if redis.call('HINCRBY', emails, owner, -1) <= 0 then
    redis.call('HDEL', emails, owner)
    redis.call('HDEL', bytes, owner)
  else
    redis.call('HINCRBY', bytes, owner, -tonumber(size or '0'))
  end
end
"""

# Count a record as pending again (a requeue): only if it is not counted now.
_COUNT = """
local function count(key, emails, bytes)
  if redis.call('HSETNX', key, 'pending', '1') == 0 then return end
  local owner, size = unpack(redis.call('HMGET', key, 'owner', 'size'))
  redis.call('HINCRBY', emails, owner, 1)
  redis.call('HINCRBY', bytes, owner, tonumber(size or '0'))
end
"""

# Take up to ARGV[2] due ids and push each one's due time to ARGV[3] (a lease), atomically, so
# two schedulers never publish the same id at once and a crash before publishing only delays it.
TAKE_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[3], id) end
return ids
"""

# One round trip before SMTP: unless the e-mail is final or claimed by another worker, take the
# claim, count the attempt, mark it Sending, move its watchdog, and return {'go', the record};
# else {why not}, an Outcome's value. (Bounced and PartlyBounced were Sent before: final too.)
START = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status == 'Sent' or status == 'Failed' or status == 'Cancelled' or status == 'Bounced'
   or status == 'PartlyBounced' then return {'already-final'} end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'busy'} end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'Sending', 'updated_at', ARGV[4])
redis.call('HDEL', KEYS[1], 'next_attempt_at')
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[5])
return {'go', redis.call('HGETALL', KEYS[1])}
"""

# Give the claim back only if this worker still holds it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Failed (with its job still stored) -> Queued with a fresh attempt budget and deadline, out of
# the Failed index, and counted as pending again. KEYS: the record, the due set, the Failed
# index, the two pending hashes.
_REQUEUE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'Failed' then return 0 end
if redis.call('HEXISTS', KEYS[1], 'job') == 0 then return 0 end
count(KEYS[1], KEYS[4], KEYS[5])
redis.call('HSET', KEYS[1], 'status', 'Queued', 'attempts', 0, 'since', ARGV[1],
           'updated_at', ARGV[1])
redis.call('HDEL', KEYS[1], 'next_attempt_at', 'report_status', 'report_attempts', 'report_error')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
redis.call('ZREM', KEYS[3], ARGV[4])
return 1
"""

# The delivery report's outcome and its watchdog in one step, so nobody sees a settled report
# still due, or a retrying one with no next try. The outcome is written only onto a record that
# still exists: an expired one must not come back as a stray hash without a TTL. updated_at is
# left alone; it dates the e-mail's own state. KEYS: the record, the report due set.
# ARGV: status, attempts, error, EmailId, the next try's time or '' (settled: off the due set).
REPORT = """
local written = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'report_status', ARGV[1], 'report_attempts', ARGV[2],
             'report_error', ARGV[3])
  written = 1
end
if ARGV[5] == '' then redis.call('ZREM', KEYS[2], ARGV[4])
else redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4]) end
return written
"""

# The one write of a delivery outcome (Sent, Retrying, Failed), for one e-mail (the plain store)
# or several (the group commit: mailgate.status.group_commit). For each JSON argument (see
# store.outcome_spec), atomically: the record's fields, the history entry, both TTLs, the due
# set, the report watchdog, the Failed index (a Failed outcome only), the counters
# (last_outcome_at too), the release of the claim if still this worker's, and (final outcomes)
# the pending counts. The records' keys come inside the arguments (one Redis, no cluster slots).
_OUTCOMES = """
local ttl, limit = ARGV[1], tonumber(ARGV[2])
for i = 3, #ARGV do
  local o = cjson.decode(ARGV[i])
  redis.call('HSET', o.key, unpack(o.fields))
  if #o.drop > 0 then redis.call('HDEL', o.key, unpack(o.drop)) end
  redis.call('RPUSH', o.log, o.entry)
  redis.call('LTRIM', o.log, -limit, -1)
  redis.call('EXPIRE', o.key, ttl)
  redis.call('EXPIRE', o.log, ttl)
  if o.due then redis.call('ZADD', KEYS[1], o.due, o.id) else redis.call('ZREM', KEYS[1], o.id) end
  if o.report_due then redis.call('ZADD', KEYS[2], o.report_due, o.id) end
  if o.index then
    redis.call('ZADD', o.index, o.at, o.id)
    redis.call('ZREMRANGEBYSCORE', o.index, '-inf', tonumber(o.at) - tonumber(ttl))
  end
  for _, c in ipairs(o.counters) do
    if c[1] == 'HINCRBY' or c[1] == 'HINCRBYFLOAT' or c[1] == 'HSET' then
      redis.call(c[1], KEYS[3], c[2], c[3])
    end
  end
  if o.claim and redis.call('GET', o.claim) == o.token then redis.call('DEL', o.claim) end
  if o.final then settle(o.key, KEYS[4], KEYS[5]) end
end
return #ARGV - 2
"""

# CancelEmail: only a Scheduled, Queued or Retrying e-mail (no worker holds it) becomes
# Cancelled; its content and due entry go, so no task already on the broker can send it. It
# joins the Cancelled index (KEYS[5]), where entries older than the TTL are pruned, and leaves
# the pending counts (KEYS[6], KEYS[7]).
# Returns {'cancelled', job} or {current status} ({'missing'} when there is no record).
_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'Scheduled' and status ~= 'Queued' and status ~= 'Retrying' then return {status} end
local job = redis.call('HGET', KEYS[1], 'job') or ''
redis.call('HSET', KEYS[1], 'status', 'Cancelled', 'updated_at', ARGV[1])
redis.call('HDEL', KEYS[1], 'job', 'next_attempt_at')
redis.call('ZREM', KEYS[3], ARGV[2])
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
redis.call('RPUSH', KEYS[2], cjson.encode({attempt = attempts, at = tonumber(ARGV[1]),
           outcome = 'Cancelled', detail = ARGV[3]}))
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('HINCRBY', KEYS[4], 'outcome:cancelled', 1)
redis.call('ZADD', KEYS[5], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[4]))
settle(KEYS[1], KEYS[6], KEYS[7])
return {'cancelled', job}
"""

# Take back a just-accepted e-mail that did not reach enough replicas, unless it is final
# already. A worker that claimed it has not sent it: with MAILGATE_REDIS_MIN_REPLICAS it waits
# for the same replicas before SMTP, finds the record gone and drops the task.
_WITHDRAW = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'Sent' or status == 'Failed' then return 0 end
settle(KEYS[1], KEYS[4], KEYS[5])
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

# A new Queued record, its TTL and its watchdog entry, and (ARGV[4] not empty) the delivery task
# pushed onto the broker queue KEYS[3]: recorded and queued together or not at all, in one
# command (a MULTI of five costs the API about half as much again to pack and parse). Every
# check that reads Redis comes first, in the same step, so a refusal writes nothing and costs
# the API no round trip of its own:
# - the suppressions of the e-mail's recipients (KEYS[7] on): the first found is answered
#   {'suppressed', its position, its JSON};
# - the owner's send rate (KEYS[6]): a moving window as the limits library keeps one, the times
#   of the last ARGV[9] e-mails accepted, newest first; the oldest of them within ARGV[10]
#   seconds of now (ARGV[11]) means the rate is used up: {'rate'};
# - the owner's quota of e-mails not yet final (KEYS[4], KEYS[5]: the pending hashes): over it
#   the answer names the limit ({'emails'} or {'bytes'}); else the record is counted.
# ARGV: ttl, watchdog time, EmailId, task message or '', owner, size, the owner's limits of
# e-mails and bytes (0: none), its rate's e-mails and seconds (0: none), now, then the record's
# field/value pairs.
CREATE = """
local owner, size = ARGV[5], tonumber(ARGV[6])
for i = 7, #KEYS do
  local found = redis.call('GET', KEYS[i])
  if found then return {'suppressed', i - 7, found} end
end
local rate, window, now = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
if rate > 0 then
  local oldest = redis.call('LINDEX', KEYS[6], rate - 1)
  if oldest and tonumber(oldest) >= now - window then return {'rate'} end
end
local emails = tonumber(redis.call('HGET', KEYS[4], owner) or '0')
local bytes = tonumber(redis.call('HGET', KEYS[5], owner) or '0')
if ARGV[7] ~= '0' and emails >= tonumber(ARGV[7]) then return {'emails'} end
if ARGV[8] ~= '0' and bytes + size > tonumber(ARGV[8]) then return {'bytes'} end
redis.call('HSET', KEYS[1], 'owner', owner, 'size', ARGV[6], 'pending', '1', unpack(ARGV, 12))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
if ARGV[4] ~= '' then redis.call('LPUSH', KEYS[3], ARGV[4]) end
redis.call('HINCRBY', KEYS[4], owner, 1)
redis.call('HINCRBY', KEYS[5], owner, ARGV[6])
if rate > 0 then
  redis.call('LPUSH', KEYS[6], ARGV[11])
  redis.call('LTRIM', KEYS[6], 0, rate - 1)
  redis.call('EXPIRE', KEYS[6], math.ceil(window))
end
return {'ok'}
"""

# A listing's filter, run where the records are: a page of record keys in; out, for each record
# in state ARGV[1], last changed within [ARGV[2], ARGV[3]], of the owner ARGV[4] ('' for any),
# its position and when it changed. One command per page instead of one per record.
MATCHING = """
local out = {}
local since, till = tonumber(ARGV[2]), tonumber(ARGV[3])
for i, key in ipairs(KEYS) do
  local row = redis.call('HMGET', key, 'status', 'updated_at', 'owner')
  local at = tonumber(row[2])
  if row[1] == ARGV[1] and at and at >= since and at <= till
     and (ARGV[4] == '' or row[3] == ARGV[4]) then
    out[#out + 1] = i
    out[#out + 1] = row[2]
  end
end
return out
"""

# The scripts that make an e-mail final or count it again carry the helpers they call.
REQUEUE = _COUNT + _REQUEUE
OUTCOMES = SETTLE + _OUTCOMES
CANCEL = SETTLE + _CANCEL
WITHDRAW = SETTLE + _WITHDRAW
