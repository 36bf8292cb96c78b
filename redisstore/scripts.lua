--@@ enqueue
-- ARGV: n, then per job: kind lane state priority run_at expires_at max_attempts idem_key created_at updated_at payload keys_since digest op
-- Keys are stored as "id:created_at:digest". A job whose key is recorded
-- (fresh) with another digest, or used earlier in the call with another
-- one, is a conflict: nothing of its op (one caller's call; several ride
-- one script) is written: the conflicting job's result is {0, 2}, the
-- op's others {0, 3}.
local n = tonumber(ARGV[1])
local W = 14
local out = {}
local seenLane, seenPrio = {}, {}
local function readKey(key)
  local v = redis.call('HGET', p .. 'keys', key)
  if not v then return nil end
  local s1 = string.find(v, ':')
  local s2 = string.find(v, ':', s1 + 1)
  local id = tonumber(string.sub(v, 1, s1 - 1))
  if s2 then
    return id, tonumber(string.sub(v, s1 + 1, s2 - 1)), string.sub(v, s2 + 1)
  end
  return id, tonumber(string.sub(v, s1 + 1)), ''
end
local badOp, seenDigest = {}, {}
for i = 0, n - 1 do
  local b = 2 + i * W
  local key, since, digest, op = ARGV[b+7], tonumber(ARGV[b+11]), ARGV[b+12], ARGV[b+13]
  if key ~= '' and digest ~= '' then
    local prev = seenDigest[key]
    if prev and prev ~= digest and not badOp[op] then badOp[op] = i end
    if not prev then seenDigest[key] = digest end
    local _, at, d = readKey(key)
    if at and at >= since and d ~= '' and d ~= digest and not badOp[op] then badOp[op] = i end
  end
end
-- IDs for the whole call in one write (a duplicate leaves a gap: IDs are
-- unique, not dense).
local nextID = redis.call('INCRBY', p .. 'seq', n) - n
for i = 0, n - 1 do
  local b = 2 + i * W
  local kind, lane, state, prio, runat = ARGV[b], ARGV[b+1], ARGV[b+2], ARGV[b+3], ARGV[b+4]
  local expires, maxatt, key, created, updated, payload = ARGV[b+5], ARGV[b+6], ARGV[b+7], ARGV[b+8], ARGV[b+9], ARGV[b+10]
  local since, digest, op = tonumber(ARGV[b+11]), ARGV[b+12], ARGV[b+13]
  local dup = nil
  if key ~= '' and not badOp[op] then
    local id, at = readKey(key)
    if id and at >= since then dup = id end
  end
  if badOp[op] == i then
    out[#out + 1] = {0, 2}
  elseif badOp[op] then
    out[#out + 1] = {0, 3}
  elseif dup then
    out[#out + 1] = {dup, 1}
  else
    nextID = nextID + 1
    local id = nextID
    -- Fields at their zero value (attempt, lease, error, finish time; no
    -- expiry or key) are left out: readers treat a missing field as zero,
    -- and every field fewer is less work for the server and the AOF.
    local f = {'kind', kind, 'lane', lane, 'state', state, 'priority', prio, 'run_at', runat,
      'max_attempts', maxatt, 'created_at', created, 'updated_at', updated, 'payload', payload}
    if expires ~= '0' then f[#f + 1] = 'expires_at'; f[#f + 1] = expires end
    if key ~= '' then f[#f + 1] = 'idem_key'; f[#f + 1] = key end
    redis.call('HSET', job(id), unpack(f))
    -- Index from the values in hand (index() would read them back); the
    -- lane and priority sets once per script, not once per job.
    if state == '1' then
      redis.call('ZADD', p .. 'ready:' .. lane .. ':' .. prio, runat, pad(id))
      local lp = lane .. ':' .. prio
      if not seenPrio[lp] then
        redis.call('ZADD', p .. 'prios:' .. lane, -tonumber(prio), prio)
        seenPrio[lp] = true
      end
    elseif state == '2' then
      redis.call('ZADD', p .. 'sched:' .. lane, runat, id)
    else
      index(id)
    end
    if not seenLane[lane] then
      redis.call('SADD', p .. 'lanes', lane)
      seenLane[lane] = true
    end
    if key ~= '' then
      redis.call('HSET', p .. 'keys', key, id .. ':' .. created .. ':' .. digest)
      redis.call('ZADD', p .. 'keytime', created, key)
    end
    out[#out + 1] = {id, 0}
  end
end
return out

--@@ claim
-- ARGV: lane, limit, now, lease_until
local lane, limit, now, lu = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
if redis.call('SISMEMBER', p .. 'paused', lane) == 1 then return {} end
local due = redis.call('ZRANGEBYSCORE', p .. 'sched:' .. lane, '-inf', now)
for _, id in ipairs(due) do
  redis.call('ZREM', p .. 'sched:' .. lane, id)
  redis.call('HSET', job(id), 'state', 1)
  index(tonumber(id))
end
local out = {}
local prios = redis.call('ZRANGE', p .. 'prios:' .. lane, 0, -1)
for _, prio in ipairs(prios) do
  if #out >= limit then break end
  local zk = p .. 'ready:' .. lane .. ':' .. prio
  local members = redis.call('ZRANGE', zk, 0, limit - #out - 1)
  if #members == 0 then redis.call('ZREM', p .. 'prios:' .. lane, prio) end
  for _, m in ipairs(members) do
    local id = tonumber(m)
    redis.call('ZREM', zk, m)
    redis.call('HINCRBY', job(id), 'attempt', 1)
    redis.call('HINCRBY', job(id), 'lease_token', 1)
    redis.call('HSET', job(id), 'state', 3, 'lease_until', lu, 'updated_at', now)
    redis.call('ZADD', p .. 'running', lu, id)
    redis.call('ZADD', p .. 'running:' .. lane, lu, id)
    out[#out + 1] = id
  end
end
return out

--@@ extend
-- ARGV: n, then per lease: id token lu
local n = tonumber(ARGV[1])
local out = {}
for i = 0, n - 1 do
  local id, token, lu = ARGV[2 + i*3], ARGV[3 + i*3], ARGV[4 + i*3]
  local h = redis.call('HMGET', job(id), 'state', 'lease_token', 'lane')
  if h[1] == '3' and h[2] == token then
    redis.call('HSET', job(id), 'lease_until', lu)
    redis.call('ZADD', p .. 'running', lu, id)
    redis.call('ZADD', p .. 'running:' .. h[3], lu, id)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out

--@@ finish
-- ARGV: n, then per outcome: id token state at error uncount run_at finished_at skipped
local n = tonumber(ARGV[1])
local out = {}
for i = 0, n - 1 do
  local b = 2 + i * 9
  local id, token, state, at, err, uncount, runat, fin = ARGV[b], ARGV[b+1], ARGV[b+2], ARGV[b+3], ARGV[b+4], tonumber(ARGV[b+5]), ARGV[b+6], ARGV[b+7]
  local skipped = ARGV[b+8]
  local h = redis.call('HMGET', job(id), 'state', 'lease_token', 'attempt')
  if h[1] == '3' and h[2] == token then
    unindex(id)
    local attempt = tonumber(h[3]) - uncount
    if attempt < 0 then attempt = 0 end
    redis.call('HSET', job(id), 'state', state, 'updated_at', at, 'attempt', attempt, 'lease_until', 0, 'finished_at', fin)
    if err ~= '' then redis.call('HSET', job(id), 'last_error', err) end
    if skipped == '1' then redis.call('HSET', job(id), 'skipped', 1) end
    if runat ~= '0' then redis.call('HSET', job(id), 'run_at', runat) end
    index(tonumber(id))
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out

--@@ rescue
-- ARGV: now. Running jobs whose lease ended before now.
local now = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', p .. 'running', '-inf', '(' .. now)
for _, id in ipairs(ids) do
  unindex(id)
  local h = redis.call('HMGET', job(id), 'attempt', 'max_attempts')
  if tonumber(h[1]) >= tonumber(h[2]) then
    redis.call('HSET', job(id), 'state', 5, 'finished_at', now)
  else
    redis.call('HSET', job(id), 'state', 1, 'run_at', now)
  end
  redis.call('HSET', job(id), 'last_error', 'lease expired', 'lease_until', 0, 'updated_at', now)
  index(tonumber(id))
end
return ids

--@@ requeue
-- ARGV: id, now
local id, now = ARGV[1], ARGV[2]
local st = redis.call('HGET', job(id), 'state')
if st ~= '5' and st ~= '6' then return 0 end
unindex(id)
redis.call('HSET', job(id), 'state', 1, 'attempt', 0, 'run_at', now, 'updated_at', now, 'finished_at', 0)
index(tonumber(id))
return 1

--@@ purge
-- ARGV: id
local id = ARGV[1]
local st = redis.call('HGET', job(id), 'state')
if st ~= '4' and st ~= '5' and st ~= '6' then return 0 end
unindex(id)
redis.call('DEL', job(id))
return 1

--@@ prune
-- ARGV: finished_before, keys_before
local before, kbefore = ARGV[1], ARGV[2]
local n = 0
for _, lane in ipairs(redis.call('SMEMBERS', p .. 'lanes')) do
  for _, st in ipairs({'4', '6'}) do
    local zk = p .. 'fin:' .. lane .. ':' .. st
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', zk, '-inf', '(' .. before)) do
      redis.call('ZREM', zk, id)
      redis.call('DEL', job(id))
      n = n + 1
    end
  end
end
for _, key in ipairs(redis.call('ZRANGEBYSCORE', p .. 'keytime', '-inf', '(' .. kbefore)) do
  redis.call('ZREM', p .. 'keytime', key)
  redis.call('HDEL', p .. 'keys', key)
end
return n

--@@ stage
-- ARGV: key cursor recipients invalid done count data. A fan-out's record
-- moves and its page (when count > 0) is stored as the next Seq: the
-- page's data, count and offset in {p}ckp:<key>, its Seq in {p}ckz:<key>.
local ck = p .. 'ck:' .. ARGV[1]
if redis.call('EXISTS', ck) == 0 then return redis.error_reply('checkpoint: not found') end
redis.call('HSET', ck, 'cursor', ARGV[2])
redis.call('HINCRBY', ck, 'recipients', tonumber(ARGV[3]))
redis.call('HINCRBY', ck, 'invalid', tonumber(ARGV[4]))
if ARGV[5] == '1' then redis.call('HSET', ck, 'done', 1) end
local n = tonumber(ARGV[6])
if n > 0 then
  redis.call('HINCRBY', ck, 'staged', n)
  local seq = redis.call('HINCRBY', ck, 'pages', 1)
  redis.call('HSET', p .. 'ckp:' .. ARGV[1], 'd' .. seq, ARGV[7], 'c' .. seq, n, 'o' .. seq, 0)
  redis.call('ZADD', p .. 'ckz:' .. ARGV[1], seq, seq)
end
return 1

--@@ cancel
-- ARGV: key state. The record moves to state; its pages are dropped and
-- what they had not drained counted as cancelled.
local ck = p .. 'ck:' .. ARGV[1]
if redis.call('EXISTS', ck) == 0 then return redis.error_reply('checkpoint: not found') end
redis.call('HSET', ck, 'state', ARGV[2])
local pg, z = p .. 'ckp:' .. ARGV[1], p .. 'ckz:' .. ARGV[1]
local left = 0
for _, seq in ipairs(redis.call('ZRANGE', z, 0, -1)) do
  local pc = redis.call('HMGET', pg, 'c' .. seq, 'o' .. seq)
  left = left + tonumber(pc[1]) - tonumber(pc[2])
end
redis.call('DEL', pg, z)
redis.call('HINCRBY', ck, 'cancelled', left)
return 1

--@@ ckcreate
-- ARGV: key spec state cursor recipients enqueued invalid done created.
-- A fan-out's record and its key in the list ({p}cks), unless the key
-- exists: 1 when created, 0 when not.
local ck = p .. 'ck:' .. ARGV[1]
if redis.call('EXISTS', ck) == 1 then return 0 end
redis.call('HSET', ck, 'spec', ARGV[2], 'state', ARGV[3], 'cursor', ARGV[4], 'recipients', ARGV[5], 'enqueued', ARGV[6],
  'invalid', ARGV[7], 'done', ARGV[8], 'created', ARGV[9])
redis.call('ZADD', p .. 'cks', 0, ARGV[1])
return 1

--@@ ckclaim
-- ARGV: key owner now until (microseconds). The fan-out's lease goes to
-- owner unless another owner holds it past now: 1 when owner holds it
-- after the call, 0 when not.
local ck = p .. 'ck:' .. ARGV[1]
if redis.call('EXISTS', ck) == 0 then return redis.error_reply('checkpoint: not found') end
local h = redis.call('HMGET', ck, 'owner', 'lease_until')
if h[1] and h[1] ~= ARGV[2] and tonumber(h[2] or '0') > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', ck, 'owner', ARGV[2], 'lease_until', ARGV[4])
return 1
