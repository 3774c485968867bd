-- Roster's Redis engine: every presence transition is one of these scripts, so it
-- is atomic across nodes. The file is split at `--@@ name` lines; the part before
-- the first marker is the prelude, prepended to every script.
--
-- A room's keys share one hash tag (KEYS[1] = "<prefix>:r:{<tenant>|<room>}"), so a
-- script touches one Cluster slot. Suffixes:
--   cfg    hash   settings (type cap idle vis status tags attrs decl created)
--   parts  hash   user -> role digit (participants)
--   m      hash   sid -> member head JSON: `{"userId":..,"name":..,"info":..` (open)
--   ss     hash   sid -> session view JSON without state: `{"sessionId":..,"joinedAt":..` (open)
--   st     hash   sid -> state JSON
--   x      hash   sid -> 5 digits: role, token role, admin, count mode, user status
--   u      hash   sid -> user id
--   p      list   the diff window's log (core::diff::Op, one per entry): "J:sid"
--                 join, "U:sid" update, "L:<leave JSON>" leave, "C:sid" cut (sid
--                 was served a snapshot here)
--   seq    string the room's diff sequence
--   l      hash   field -> "<sid>\31<user>\31<expires ms>"
--   e      hash   entity: stale, busy, ver, until
--   meta   hash   over (0/1), last (count at last flush), empty (ms since empty)
--   ch     the room's pub/sub channel
local R = KEYS[1]
local function k(s) return R .. ':' .. s end
local STATUS = { [0] = 'offline', [1] = 'away', [2] = 'online' }
local SEP = '\31'

local function xrole(x) return tonumber(string.sub(x, 1, 1)) end
local function xstatus(x) return STATUS[tonumber(string.sub(x, 5, 5))] end

local function split3(v)
  local a = string.find(v, SEP, 1, true)
  local b = string.find(v, SEP, a + 1, true)
  return string.sub(v, 1, a - 1), string.sub(v, a + 1, b - 1), string.sub(v, b + 1)
end

local function view(sid)
  local head = redis.call('HGET', k('m'), sid)
  if not head then return nil end
  local x = redis.call('HGET', k('x'), sid)
  return head .. ',"status":"' .. xstatus(x) .. '","session":' .. redis.call('HGET', k('ss'), sid)
    .. ',"state":' .. redis.call('HGET', k('st'), sid) .. '}}'
end

-- Appends to the diff window's log as core::diff::Window::push does (the diffs are
-- planned from the log on each node by core::diff::plan; nothing is decided here).
-- An update is dropped when one of the same session is already logged after the
-- last cut. Always answers 1: the caller schedules a flush after the diff window.
-- (The memory engine asks only when the log was empty; here the node that
-- scheduled the flush of what is pending may have died, and a flush that finds
-- nothing pending costs one cheap call.)
local function push(kind, sid, payload)
  if kind == 'U' then
    local p = redis.call('LRANGE', k('p'), 0, -1)
    for i = #p, 1, -1 do
      local t = string.sub(p[i], 1, 1)
      if t == 'C' then break end
      if (t == 'J' or t == 'U') and string.sub(p[i], 3) == sid then return 1 end
    end
    redis.call('RPUSH', k('p'), 'U:' .. sid)
  elseif kind == 'J' then
    redis.call('RPUSH', k('p'), 'J:' .. sid)
  else
    redis.call('RPUSH', k('p'), 'L:' .. payload)
  end
  return 1
end

-- A snapshot is served to `sid` now: its next diff starts here (none needed while
-- nothing is pending).
local function cut(sid)
  if redis.call('LLEN', k('p')) > 0 then redis.call('RPUSH', k('p'), 'C:' .. sid) end
end

local function hmap(key)
  local a = redis.call('HGETALL', k(key))
  local m = {}
  for i = 1, #a, 2 do m[a[i]] = a[i + 1] end
  return m
end

-- The users array of a PRESENCE snapshot, grouped by user (users and their
-- sessions in id order, as the memory engine does), and the member count.
local function users_json()
  local heads = redis.call('HGETALL', k('m'))
  local head, sids = {}, {}
  for i = 1, #heads, 2 do
    head[heads[i]] = heads[i + 1]
    sids[#sids + 1] = heads[i]
  end
  table.sort(sids)
  local ss, st, x, u = hmap('ss'), hmap('st'), hmap('x'), hmap('u')
  local users, order = {}, {}
  for _, sid in ipairs(sids) do
    local user = u[sid]
    local e = users[user]
    if not e then
      e = { head = head[sid], status = xstatus(x[sid]), sessions = {} }
      users[user] = e
      order[#order + 1] = user
    end
    e.sessions[#e.sessions + 1] = ss[sid] .. ',"state":' .. st[sid] .. '}'
  end
  table.sort(order)
  local out = {}
  for _, user in ipairs(order) do
    local e = users[user]
    out[#out + 1] = e.head .. ',"status":"' .. e.status .. '","sessions":[' .. table.concat(e.sessions, ',') .. ']}'
  end
  return '[' .. table.concat(out, ',') .. ']', #sids
end

local function seq() return tonumber(redis.call('GET', k('seq')) or '0') end

local function entity()
  local e = redis.call('HMGET', k('e'), 'stale', 'busy', 'ver')
  return { e[1] or '0', e[2] or '', tonumber(e[3] or '0') }
end

-- A room setting, '' when unset (the timing overrides of its type: 'hb', 'to').
local function cfg(field) return redis.call('HGET', k('cfg'), field) or '' end

-- {'list', seq, count, users, stale, busy, ver, locks, hb} or {'count', seq, count}
local function answer(count_mode, limit)
  local n = redis.call('HLEN', k('m'))
  if count_mode or n > limit then return { 'count', seq(), n } end
  local users, count = users_json()
  local e = entity()
  return { 'list', seq(), count, users, e[1], e[2], e[3], redis.call('HGETALL', k('l')), cfg('hb') }
end

local ROOM_KEYS = { 'cfg', 'parts', 'm', 'ss', 'st', 'x', 'u', 'p', 'seq', 'l', 'e', 'meta' }
local function drop()
  for _, s in ipairs(ROOM_KEYS) do redis.call('DEL', k(s)) end
end

local function role_of(user, open_role, admin)
  if admin == '1' then return 3 end
  local pr = redis.call('HGET', k('parts'), user)
  if pr then return tonumber(pr) end
  if redis.call('HGET', k('cfg'), 'vis') == 'private' then return nil end
  return tonumber(open_role)
end

-- After a participant or visibility change: members' roles recomputed; who must
-- go and which locks were lost, each as {field, sid, user} (as
-- core::room::Room::reapply_roles).
local function reapply()
  local private = redis.call('HGET', k('cfg'), 'vis') == 'private'
  local xs, u = hmap('x'), hmap('u')
  local evicted, released = {}, {}
  for sid, x in pairs(xs) do
    local role
    if string.sub(x, 3, 3) == '1' then
      role = 3
    else
      local pr = redis.call('HGET', k('parts'), u[sid])
      if pr then role = tonumber(pr)
      elseif not private then role = tonumber(string.sub(x, 2, 2)) end
    end
    if role then
      redis.call('HSET', k('x'), sid, tostring(role) .. string.sub(x, 2))
    else
      evicted[#evicted + 1] = sid
    end
  end
  local locks = redis.call('HGETALL', k('l'))
  for i = 1, #locks, 2 do
    local owner = split3(locks[i + 1])
    local x = redis.call('HGET', k('x'), owner)
    if not x or xrole(x) < 2 then
      redis.call('HDEL', k('l'), locks[i])
      local _, user = split3(locks[i + 1])
      released[#released + 1] = { locks[i], owner, user }
    end
  end
  table.sort(evicted)
  return { evicted, released }
end

local function create(now, first, last)
  redis.call('HSET', k('cfg'), unpack(ARGV, first, last))
  redis.call('HSET', k('meta'), 'empty', now)
end

--@@ join
-- ARGV: sid user now head ss st open_role admin count status limit has_state cfg...
local sid, now = ARGV[1], ARGV[3]
local created = 0
if redis.call('EXISTS', k('cfg')) == 0 then
  create(now, 13, #ARGV)
  created = 1
end
local count_mode = ARGV[9] == '1'
local limit = tonumber(ARGV[11])
if redis.call('HEXISTS', k('m'), sid) == 1 then
  cut(sid)
  return { 'ok', 1, 0, created, answer(count_mode, limit), 0, cfg('to') }
end
local function fail(code, detail)
  if created == 1 then drop() end
  return { 'err', code, detail }
end
local status = redis.call('HGET', k('cfg'), 'status')
if status ~= 'active' then return fail('room_closed', status) end
local role = role_of(ARGV[2], ARGV[7], ARGV[8])
if not role then return fail('forbidden', 'private') end
if role < 1 and ARGV[12] == '1' then return fail('forbidden', 'state') end
local cap = tonumber(redis.call('HGET', k('cfg'), 'cap'))
if redis.call('HLEN', k('m')) >= cap then return fail('room_full', tostring(cap)) end
redis.call('HSET', k('m'), sid, ARGV[4])
redis.call('HSET', k('ss'), sid, ARGV[5])
redis.call('HSET', k('st'), sid, ARGV[6])
redis.call('HSET', k('x'), sid, tostring(role) .. ARGV[7] .. ARGV[8] .. ARGV[9] .. ARGV[10])
redis.call('HSET', k('u'), sid, ARGV[2])
redis.call('HDEL', k('meta'), 'empty')
local nf = push('J', sid)
cut(sid)
local occupied = redis.call('HLEN', k('m')) == 1 and 1 or 0
return { 'ok', 0, nf, created, answer(count_mode, limit), occupied, cfg('to') }

--@@ leave
-- ARGV: sid reason now. Exactly once: a second caller finds no member.
local sid = ARGV[1]
local user = redis.call('HGET', k('u'), sid)
if not user then return false end
for _, s in ipairs({ 'm', 'ss', 'st', 'x', 'u' }) do redis.call('HDEL', k(s), sid) end
local released = {}
local locks = redis.call('HGETALL', k('l'))
for i = 1, #locks, 2 do
  if split3(locks[i + 1]) == sid then
    redis.call('HDEL', k('l'), locks[i])
    released[#released + 1] = locks[i]
  end
end
local leave = '{"userId":' .. cjson.encode(user) .. ',"sessionId":"' .. sid .. '","reason":"' .. ARGV[2] .. '"}'
local nf = push('L', sid, leave)
local n = redis.call('HLEN', k('m'))
if n == 0 then redis.call('HSET', k('meta'), 'empty', ARGV[3]) end
return { nf, n == 0 and 1 or 0, released }

--@@ set_state
-- ARGV: sid state. Answers ok, whether to flush, whether the state changed.
local sid = ARGV[1]
local x = redis.call('HGET', k('x'), sid)
if not x then return { 'err', 'not_subscribed' } end
if redis.call('HGET', k('st'), sid) == ARGV[2] then return { 'ok', 0, 0 } end
if xrole(x) < 1 then return { 'err', 'forbidden', tostring(xrole(x)) } end
redis.call('HSET', k('st'), sid, ARGV[2])
return { 'ok', push('U', sid), 1 }

--@@ touch
-- ARGV: sid status [latency_json ss]
local sid = ARGV[1]
local x = redis.call('HGET', k('x'), sid)
if not x then return 0 end
redis.call('HSET', k('x'), sid, string.sub(x, 1, 4) .. ARGV[2])
return push('U', sid)

--@@ flush
-- ARGV: limit publish_command. Publishes the window's log with the member views
-- its joins and updates need, for each node to plan and render (core::diff).
local ops = redis.call('LRANGE', k('p'), 0, -1)
if #ops == 0 then return 0 end
redis.call('DEL', k('p'))
local s = redis.call('INCR', k('seq'))
local views, seen = {}, {}
for _, op in ipairs(ops) do
  local t, rest = string.sub(op, 1, 1), string.sub(op, 3)
  if (t == 'J' or t == 'U') and not seen[rest] then
    seen[rest] = true
    local v = view(rest)
    if v then views[#views + 1] = cjson.encode(rest) .. ':' .. v end
  end
end
local count = redis.call('HLEN', k('m'))
local over = count > tonumber(ARGV[1])
local meta = redis.call('HMGET', k('meta'), 'over', 'last')
local back_under = meta[1] == '1' and not over
local changed = tostring(count) ~= (meta[2] or '0')
redis.call('HSET', k('meta'), 'over', over and '1' or '0', 'last', tostring(count))
local msg = '{"seq":' .. s .. ',"count":' .. count .. ',"over":' .. tostring(over)
  .. ',"backUnder":' .. tostring(back_under) .. ',"countChanged":' .. tostring(changed)
  .. ',"ops":' .. cjson.encode(ops) .. ',"views":{' .. table.concat(views, ',') .. '}}'
redis.call(ARGV[2], k('ch'), 'D' .. msg)
return 1

--@@ snapshot
-- ARGV: the members this snapshot is sent to (none for a REST read): each gets a
-- cut, so its next diff starts where this snapshot ends (as at a join).
if redis.call('EXISTS', k('cfg')) == 0 then return false end
for _, sid in ipairs(ARGV) do
  if redis.call('HEXISTS', k('m'), sid) == 1 then cut(sid) end
end
local users, count = users_json()
local e = entity()
return { 'list', seq(), count, users, e[1], e[2], e[3], redis.call('HGETALL', k('l')), cfg('hb') }

--@@ lock
-- ARGV: sid field now ttl
local sid, field, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local x = redis.call('HGET', k('x'), sid)
if not x then return { 'err', 'not_subscribed' } end
if xrole(x) < 2 then return { 'err', 'forbidden', tostring(xrole(x)) } end
local cur = redis.call('HGET', k('l'), field)
local was = {}
if cur then
  local s, u, e = split3(cur)
  if tonumber(e) > now and s ~= sid then return { 'held', s, u, e } end
  -- Another session's expired lock (as core::room::Room::lock): named.
  if s ~= sid then was = { s, u, e } end
end
local user = redis.call('HGET', k('u'), sid)
local exp = tostring(now + tonumber(ARGV[4]))
redis.call('HSET', k('l'), field, sid .. SEP .. user .. SEP .. exp)
return { 'acquired', sid, user, exp, unpack(was) }

--@@ unlock
-- ARGV: sid field
local sid, field = ARGV[1], ARGV[2]
if redis.call('HEXISTS', k('x'), sid) == 0 then return { 'err', 'not_subscribed' } end
local cur = redis.call('HGET', k('l'), field)
if not cur then return { 'none' } end
local s, u, e = split3(cur)
if s ~= sid then return { 'err', 'not_lock_owner' } end
redis.call('HDEL', k('l'), field)
return { 'released', s, u, e }

--@@ refresh_locks
-- A heartbeat, per room: ARGV: sid until latency ('' = unknown). The owner's
-- locks are refreshed and the member's latency updated.
local sid = ARGV[1]
local out = {}
if ARGV[3] ~= '' then
  local ss = redis.call('HGET', k('ss'), sid)
  if ss then
    redis.call('HSET', k('ss'), sid, (string.gsub(ss, '"latencyMs":[%dnul]+', '"latencyMs":' .. ARGV[3], 1)))
  end
end
local locks = redis.call('HGETALL', k('l'))
for i = 1, #locks, 2 do
  local s, u = split3(locks[i + 1])
  if s == sid then
    redis.call('HSET', k('l'), locks[i], s .. SEP .. u .. SEP .. ARGV[2])
    out[#out + 1] = locks[i]
  end
end
return out

--@@ expire_lock
-- ARGV: field now ('' = force)
local cur = redis.call('HGET', k('l'), ARGV[1])
if not cur then return false end
local s, u, e = split3(cur)
if ARGV[2] ~= '' and tonumber(e) > tonumber(ARGV[2]) then return false end
redis.call('HDEL', k('l'), ARGV[1])
return { s, u, e }

--@@ lifecycle
-- ARGV: mode by now ttl at cfg... (`at`: the event's own time in ms, or '').
-- An event older than the last one applied with a time is superseded (the
-- two topics keep no order between them; at the same ms a MUTATED wins): the
-- answer's 5th element is 1 and nothing changes. Same rule as
-- core::room::EntityState::newer.
local now = ARGV[3]
local created = 0
if redis.call('EXISTS', k('cfg')) == 0 then
  create(now, 6, #ARGV)
  created = 1
end
local mutated = ARGV[1] ~= 'mutating'
if ARGV[5] ~= '' then
  local at = tonumber(ARGV[5])
  local last = redis.call('HMGET', k('e'), 'at', 'am')
  local last_at = tonumber(last[1] or '0')
  if at < last_at or (at == last_at and last[2] == '1' and not mutated) then
    local e = entity()
    return { created, e[1], e[2], e[3], 1 }
  end
  redis.call('HSET', k('e'), 'at', ARGV[5], 'am', mutated and '1' or '0')
end
if not mutated then
  redis.call('HSET', k('e'), 'stale', '1', 'busy', ARGV[2], 'until', tostring(tonumber(now) + tonumber(ARGV[4])))
else
  redis.call('HSET', k('e'), 'stale', '0', 'busy', '', 'until', '')
  redis.call('HINCRBY', k('e'), 'ver', 1)
end
local e = entity()
return { created, e[1], e[2], e[3], 0 }

--@@ expire_stale
-- ARGV: now
local u = redis.call('HGET', k('e'), 'until')
if not u or u == '' or tonumber(u) > tonumber(ARGV[1]) then return false end
redis.call('HSET', k('e'), 'stale', '0', 'busy', '', 'until', '')
local e = entity()
return { e[1], e[2], e[3] }

--@@ remove_if_idle
-- ARGV: now
local cfg = redis.call('HMGET', k('cfg'), 'decl', 'idle')
if not cfg[2] or cfg[1] == '1' then return 0 end
if redis.call('HLEN', k('m')) > 0 or redis.call('LLEN', k('p')) > 0 then return 0 end
local empty = redis.call('HGET', k('meta'), 'empty')
if not empty or tonumber(ARGV[1]) - tonumber(empty) < tonumber(cfg[2]) then return 0 end
drop()
return 1

--@@ create_room
-- ARGV: now n_cfg cfg... parts...
if redis.call('EXISTS', k('cfg')) == 1 then return 0 end
local n = tonumber(ARGV[2])
create(ARGV[1], 3, 2 + n)
if #ARGV > 2 + n then redis.call('HSET', k('parts'), unpack(ARGV, 3 + n, #ARGV)) end
return 1

--@@ update_room
-- ARGV: reapply(0/1) cfg...
if redis.call('EXISTS', k('cfg')) == 0 then return false end
if #ARGV > 1 then redis.call('HSET', k('cfg'), unpack(ARGV, 2, #ARGV)) end
redis.call('HSET', k('cfg'), 'decl', '1')
if ARGV[1] == '1' then return reapply() end
return { {}, {} }

--@@ delete_room
if redis.call('EXISTS', k('cfg')) == 0 then return false end
local members = redis.call('HKEYS', k('m'))
drop()
return { members }

--@@ set_participant
-- ARGV: user role ('' = remove)
if redis.call('EXISTS', k('cfg')) == 0 then return false end
if ARGV[2] == '' then
  redis.call('HDEL', k('parts'), ARGV[1])
else
  redis.call('HSET', k('parts'), ARGV[1], ARGV[2])
end
return reapply()

--@@ user_change
-- KEYS[1] = the user's hash. ARGV: op sid status device now
-- op: attach | detach | status | seen. Returns {before, after}.
local function merged()
  local best = 0
  local all = redis.call('HGETALL', R)
  for i = 1, #all, 2 do
    if all[i] ~= '_seen' then
      local s = tonumber(string.sub(all[i + 1], 1, 1))
      if s > best then best = s end
    end
  end
  return best
end
local before = merged()
local op, sid = ARGV[1], ARGV[2]
if op == 'attach' then
  redis.call('HSET', R, sid, ARGV[3] .. ARGV[4])
elseif op == 'detach' then
  if redis.call('HDEL', R, sid) == 1 then redis.call('HSET', R, '_seen', ARGV[5]) end
elseif op == 'status' then
  local cur = redis.call('HGET', R, sid)
  if cur then redis.call('HSET', R, sid, ARGV[3] .. string.sub(cur, 2)) end
elseif op == 'seen' then
  local cur = redis.call('HGET', R, '_seen')
  if not cur or tonumber(cur) < tonumber(ARGV[5]) then redis.call('HSET', R, '_seen', ARGV[5]) end
end
return { before, merged() }

--@@ claim_expired
-- KEYS[1] = the liveness sorted set. ARGV: now max. Removes and returns the
-- sessions whose deadline has passed: whoever runs this owns their leaves, so
-- each dead session is announced exactly once.
local due = redis.call('ZRANGEBYSCORE', R, '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, sid in ipairs(due) do redis.call('ZREM', R, sid) end
return due

--@@ take_over
-- KEYS[1] = a session record. ARGV: tenant user node. Moves a session to `node`
-- unless it ended meanwhile (see `release`); returns its rooms. A session handed
-- over by a stopping node (`g`, see `hand_over`) is live again here. `to` (Redis
-- time, ms) tells a claim racing this take-over to keep off (`claim_record`).
if redis.call('EXISTS', R) == 0 then return false end
local rec = redis.call('HMGET', R, 't', 'u', 'n')
if rec[1] ~= ARGV[1] or rec[2] ~= ARGV[2] or rec[3] == ARGV[3] then return false end
local now = redis.call('TIME')
redis.call('HSET', R, 'n', ARGV[3], 'to', now[1] * 1000 + math.floor(now[2] / 1000))
redis.call('HDEL', R, 'g')
return { rec[3], redis.call('SMEMBERS', R .. ':r') }

--@@ release
-- KEYS[1] = a session record. ARGV: node. Before a session's leaves: 0 when
-- another node has taken it over; else the record goes (no take-over after this).
local n = redis.call('HGET', R, 'n')
if n and n ~= ARGV[1] then return 0 end
redis.call('DEL', R)
return 1

--@@ hand_over
-- KEYS[1] = a session record. ARGV: node. At the node's shutdown the session
-- stays for the rest of its leave grace, marked `g` so that the sweep claiming it
-- (nobody resumed it) announces `disconnected`, not `timeout`. 0 if another node
-- has taken it over meanwhile (then it is not ours to hand over).
if redis.call('HGET', R, 'n') ~= ARGV[1] then return 0 end
redis.call('HSET', R, 'g', '1')
return 1

--@@ claim_record
-- KEYS[1] = a session record whose liveness deadline a claim has just taken.
-- ARGV: window (ms). Takes the record and its rooms (the claimer announces the
-- leaves), unless a take-over moved the session less than `window` ago: then it
-- lives on another node whose first liveness write has not landed yet, and 0 tells
-- the caller to put a deadline back instead. false if the record is gone.
if redis.call('EXISTS', R) == 0 then return false end
local to = redis.call('HGET', R, 'to')
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
if to and ms - tonumber(to) < tonumber(ARGV[1]) then return 0 end
local rec = redis.call('HGETALL', R)
local rooms = redis.call('SMEMBERS', R .. ':r')
redis.call('DEL', R, R .. ':r')
return { rec, rooms }

--@@ append_events
-- KEYS[1] = "<prefix>:ev:{<tenant>}", the tenant's event stream (entry id
-- "<seq>-0"). ARGV[1] = entries kept, ARGV[2..] = the events, in order.
-- Answers the first number given.
local n = #ARGV - 1
local last = redis.call('INCRBY', k('seq'), n)
local first = last - n + 1
for i = 2, #ARGV do
  redis.call('XADD', R, 'MAXLEN', '~', ARGV[1], (first + i - 2) .. '-0', 'e', ARGV[i])
end
return first

--@@ hold_lease
-- ARGV[1] = holder, ARGV[2] = ttl ms. 1 if the holder has the lease now.
local cur = redis.call('GET', k('lease'))
if cur == false or cur == ARGV[1] then
  redis.call('SET', k('lease'), ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0

--@@ release_lease
if redis.call('GET', k('lease')) == ARGV[1] then redis.call('DEL', k('lease')) end
return 1

--@@ set_cursor
-- ARGV[1] = consumer, ARGV[2] = seq: the cursor only moves forward.
local cur = tonumber(redis.call('HGET', k('cur'), ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then redis.call('HSET', k('cur'), ARGV[1], ARGV[2]) end
return 1
