//! The Lua scripts behind every message to a topic or the directory object.
//!
//! Redis runs one script at a time, so each script is one atomic message, like a Durable
//! Object handling one request. Every script takes the key prefix as `ARGV[1]`; keys are
//! built inside the scripts, so these need one Redis (or a primary with replicas); the
//! Redis Cluster mode has its own topic scripts (`cluster_scripts.rs`) and shares the
//! directory's. The key layout is in `docs/cluster.md`.

/// Redis's clock, read once per script and only by scripts that need it. Time is Redis's
/// own (`TIME`), never a node's: a deadline written by one node and checked by another
/// must not depend on their clocks agreeing.
pub(crate) const CLOCK: &str = r#"
local now_ms
local function clock()
  if now_ms == nil then
    local t = redis.call('TIME')
    now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now_ms
end
"#;

/// The directory's connection records, written once for both modes: `d` is where the
/// directory's keys start (the prefix with one Redis, the prefix and the `{dir}` hash
/// tag with Redis Cluster), `publish` the command revocations go out with.
pub(crate) const DIRECTORY: &str = r#"
local function add_connection(id, node, record, tenant)
  local stored = d .. 'conn:' .. id
  -- Adding again (a resync) keeps the connection's place in arrival order.
  if redis.call('EXISTS', stored) == 0 then
    local arrival = redis.call('INCR', d .. 'arrivals')
    redis.call('ZADD', d .. 'conns', arrival, id)
    if tenant ~= '' then redis.call('ZADD', d .. 'tenant:' .. tenant .. ':conns', arrival, id) end
  end
  redis.call('SET', stored, record)
  redis.call('SADD', d .. 'node:' .. node .. ':conns', id)
end
local function remove_connection(id, node, tenant)
  redis.call('DEL', d .. 'conn:' .. id)
  redis.call('ZREM', d .. 'conns', id)
  if tenant ~= '' then redis.call('ZREM', d .. 'tenant:' .. tenant .. ':conns', id) end
  redis.call('SREM', d .. 'node:' .. node .. ':conns', id)
end
-- The tenant of a stored connection record ('' for none): its topics all belong to one.
local function tenant_of(record)
  local first = cjson.decode(record).topics[1] or ''
  return string.match(first, '^([^~]+)~') or ''
end
"#;

/// The helpers of the single-Redis scripts, after [`CLOCK`] and [`DIRECTORY`].
const PRELUDE: &str = r#"
local function key(topic, what) return p .. 'topic:' .. topic .. ':' .. what end
local function epoch(candidate)
  local current = redis.call('GET', p .. 'epoch')
  if current then return current end
  redis.call('SET', p .. 'epoch', candidate)
  return candidate
end
-- Whether a topic no node holds is still within its grace.
local function in_grace(topic)
  local deadline = redis.call('ZSCORE', p .. 'orphans', topic)
  return deadline ~= false and deadline ~= nil and tonumber(deadline) > clock()
end
local function is_live(topic)
  return redis.call('EXISTS', key(topic, 'nodes')) == 1 or in_grace(topic)
end
local function forget(topic)
  for _, node in ipairs(redis.call('HKEYS', key(topic, 'nodes'))) do
    redis.call('DEL', key(topic, 'conns:' .. node))
  end
  redis.call('DEL', key(topic, 'nodes'), key(topic, 'meta'), key(topic, 'history'), key(topic, 'ids'))
  redis.call('ZREM', p .. 'topics', topic)
  redis.call('ZREM', p .. 'orphans', topic)
end
local function orphan_or_forget(topic, now, grace)
  if redis.call('EXISTS', key(topic, 'nodes')) == 0 then
    if grace > 0 then
      redis.call('ZADD', p .. 'orphans', now + grace, topic)
    else
      forget(topic)
    end
  end
end
local function join(topic, node, conn, now)
  if not is_live(topic) then
    forget(topic)
    redis.call('HSET', key(topic, 'meta'), 'createdAt', now, 'seq', 0,
      'createdAfter', redis.call('GET', p .. 'position') or 0, 'evictedThrough', 0)
    redis.call('ZADD', p .. 'topics', 0, topic)
  end
  redis.call('ZREM', p .. 'orphans', topic)
  local members = key(topic, 'conns:' .. node)
  redis.call('SADD', members, conn)
  redis.call('HSET', key(topic, 'nodes'), node, redis.call('SCARD', members))
  redis.call('SADD', p .. 'node:' .. node .. ':topics', topic)
end
local function leave(topic, node, conn, now, grace)
  local members = key(topic, 'conns:' .. node)
  if redis.call('SREM', members, conn) == 0 then return 0 end
  local left = redis.call('SCARD', members)
  if left == 0 then
    redis.call('HDEL', key(topic, 'nodes'), node)
    redis.call('SREM', p .. 'node:' .. node .. ':topics', topic)
  else
    redis.call('HSET', key(topic, 'nodes'), node, left)
  end
  orphan_or_forget(topic, now, grace)
  return 1
end
-- A history entry is `seq position id \n type \n publishedAt \n data`: its position and id.
local function entry_of(entry)
  local pos, id = string.match(entry, '^%d+ (%d+) ([^\n]*)\n')
  return tonumber(pos), id
end
-- The topic's history entries with after < position < before, oldest first: read from
-- the newest end back, a growing chunk at a time, so a read costs what it returns.
local function entries_between(topic, after, before)
  local history = key(topic, 'history')
  local newest_first, stop, step, done = {}, redis.call('LLEN', history) - 1, 16, false
  while stop >= 0 and not done do
    local start = math.max(0, stop - step + 1)
    local chunk = redis.call('LRANGE', history, start, stop)
    for k = #chunk, 1, -1 do
      local pos = entry_of(chunk[k])
      if pos <= after then
        done = true
        break
      end
      if pos < before then newest_first[#newest_first + 1] = chunk[k] end
    end
    stop, step = start - 1, step * 2
  end
  local entries = {}
  for k = #newest_first, 1, -1 do entries[#entries + 1] = newest_first[k] end
  return entries
end
-- One topic of a read of histories, in the shape `parse_topic_history` takes.
local function topic_read(topic, matches, entries)
  local meta = redis.call('HMGET', key(topic, 'meta'), 'createdAfter', 'evictedThrough')
  return {topic, meta[1] or '0', meta[2] or '0', redis.call('GET', p .. 'position') or '0', matches, entries}
end
local function deliver(node, ep, pos, body)
  local n = redis.call('HINCRBY', p .. 'delivered', node, 1)
  redis.call('PUBLISH', p .. 'node:' .. node .. ':events', ep .. ' ' .. pos .. ' ' .. n .. '\n' .. body)
end
"#;

/// ARGV: prefix, topic, node, connection id. Membership is a set of connection ids per
/// topic and node, so joining twice counts once.
const JOIN: &str = r#"
join(ARGV[2], ARGV[3], ARGV[4], clock())
return 1
"#;

/// ARGV: prefix, topic, node, connection id, grace in ms. Leaving a topic one never
/// joined (or twice) changes nothing.
const LEAVE: &str = r#"
return leave(ARGV[2], ARGV[3], ARGV[4], clock(), tonumber(ARGV[5]))
"#;

/// ARGV: prefix, topics... Returns 1 or 0 per topic.
const LIVE: &str = r#"
local out = {}
for i = 2, #ARGV do
  out[#out + 1] = is_live(ARGV[i]) and 1 or 0
end
return out
"#;

/// The append of one event, shared by [`APPEND`] and [`APPEND_ALL`]: `keep` the history
/// length, `ep` the epoch, `at` the publishing node's clock (only shown, as the topic's
/// `lastEventAt`), `blob` the event, `id` its id, `topics` where it goes. Returns the
/// epoch, the position, then topic and sequence number of each topic appended to (none
/// when no topic is live). The publishes to each node's channel happen inside the
/// script, so every node receives publishes in position order, each numbered by the
/// node's own delivery counter so the node can tell when one went missing. A publish
/// whose id a live topic's history still holds is a retry: it is answered with the
/// first one's position and sequence numbers and appended nowhere.
const APPEND_ONE: &str = r#"
local function append(keep, ep, at, blob, id, topics)
  local live = {}
  for _, topic in ipairs(topics) do
    local nodes = redis.call('HKEYS', key(topic, 'nodes'))
    if #nodes > 0 or in_grace(topic) then live[#live + 1] = {topic, nodes} end
  end
  if #live == 0 then return {ep, 0} end
  -- A retry may use up a position: positions only need to grow.
  local pos = redis.call('INCR', p .. 'position')
  if keep > 0 then
    -- Claims the id in each topic's index; a topic that already holds it makes this a retry.
    local claimed, retried = {}, {}
    for _, t in ipairs(live) do
      if redis.call('HSETNX', key(t[1], 'ids'), id, pos) == 1 then
        claimed[#claimed + 1] = t[1]
      else
        retried[#retried + 1] = t[1]
      end
    end
    if #retried > 0 then
      for _, topic in ipairs(claimed) do redis.call('HDEL', key(topic, 'ids'), id) end
      local out = {ep, 0}
      for _, topic in ipairs(retried) do
        local first = tonumber(string.match(redis.call('HGET', key(topic, 'ids'), id), '(%d+)$'))
        out[2] = first
        local entry = entries_between(topic, first - 1, first + 1)[1]
        if entry then
          out[#out + 1] = topic
          out[#out + 1] = string.match(entry, '^(%d+) ')
        end
      end
      return out
    end
  end
  local routes, order, out = {}, {}, {ep, pos}
  for _, t in ipairs(live) do
    local topic, nodes = t[1], t[2]
    local meta = key(topic, 'meta')
    -- The sequence number is also the topic's count of events.
    local seq = redis.call('HINCRBY', meta, 'seq', 1)
    local evicted = 0
    if keep > 0 then
      local history, ids = key(topic, 'history'), key(topic, 'ids')
      local length = redis.call('RPUSH', history, seq .. ' ' .. pos .. ' ' .. blob)
      while length > keep do
        -- A history holds an id at most once (a second publish of it is a retry), so the
        -- index entry of an evicted event is that event's.
        local epos, eid = entry_of(redis.call('LPOP', history))
        redis.call('HDEL', ids, eid)
        evicted = epos
        length = length - 1
      end
    else
      evicted = pos
    end
    if evicted > 0 then
      redis.call('HSET', meta, 'lastEventAt', at, 'evictedThrough', evicted)
    else
      redis.call('HSET', meta, 'lastEventAt', at)
    end
    for _, node in ipairs(nodes) do
      if routes[node] == nil then
        routes[node] = {}
        order[#order + 1] = node
      end
      local r = routes[node]
      r[#r + 1] = topic .. ' ' .. seq
    end
    out[#out + 1] = topic
    out[#out + 1] = seq
  end
  for _, node in ipairs(order) do
    deliver(node, ep, pos, table.concat(routes[node], '\n') .. '\n\n' .. blob)
  end
  return out
end
"#;

/// ARGV: prefix, history length, event blob, epoch candidate, event id, the publishing
/// node's clock, topics... Returns what [`APPEND_ONE`] does.
const APPEND: &str = r#"
local topics = {}
for i = 7, #ARGV do topics[#topics + 1] = ARGV[i] end
return append(tonumber(ARGV[2]), epoch(ARGV[4]), ARGV[6], ARGV[3], ARGV[5], topics)
"#;

/// ARGV: prefix, history length, epoch candidate, the publishing node's clock, then for
/// each event: its number of topics, its blob, its id, its topics. Appends them one after
/// another in that order, in one script (a batch's events in one round trip), and
/// returns one [`APPEND_ONE`] answer per event.
const APPEND_ALL: &str = r#"
local keep, ep, at = tonumber(ARGV[2]), epoch(ARGV[3]), ARGV[4]
local answers, i = {}, 5
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local topics = {}
  for k = 1, n do topics[k] = ARGV[i + 2 + k] end
  answers[#answers + 1] = append(keep, ep, at, ARGV[i + 1], ARGV[i + 2], topics)
  i = i + 3 + n
end
return answers
"#;

/// ARGV: prefix, topic, limit. Returns 0 when the topic is not live, else 1 and the
/// history entries (`seq position blob`), oldest first.
const TAIL: &str = r#"
local topic, limit = ARGV[2], tonumber(ARGV[3])
if not is_live(topic) then return {0} end
local out = {1}
for _, entry in ipairs(redis.call('LRANGE', key(topic, 'history'), -limit, -1)) do
  out[#out + 1] = entry
end
return out
"#;

/// ARGV: prefix, event id, epoch candidate, topics... One consistent read of every topic
/// of a resume (a script runs alone: no publish lands in between). Returns the epoch,
/// then per live topic `{topic, createdAfter, evictedThrough, the store's last position,
/// {position of the id}, {entries after the earliest position of the id in any topic}}`;
/// no entries at all when no topic holds the id. The id is looked up in each topic's index and only the
/// entries after it are read: a resume one event behind costs one event.
const READ_SINCE: &str = r#"
local id = ARGV[2]
local ep = epoch(ARGV[3])
local live, earliest = {}, nil
for i = 4, #ARGV do
  local topic = ARGV[i]
  if is_live(topic) then
    local held = redis.call('HGET', key(topic, 'ids'), id)
    local pos = held and tonumber(string.match(held, '(%d+)$'))
    if pos and (earliest == nil or pos < earliest) then earliest = pos end
    live[#live + 1] = {topic, pos}
  end
end
local out = {ep}
for _, t in ipairs(live) do
  local after = {}
  if earliest ~= nil then after = entries_between(t[1], earliest, math.huge) end
  out[#out + 1] = topic_read(t[1], t[2] and {t[2]} or {}, after)
end
return out
"#;

/// ARGV: prefix, after, before, the number of token ids, token ids..., topics... What a
/// node that lost messages on its channel reads back: the epoch, which of the tokens were
/// revoked, then per live topic `{topic, createdAfter, evictedThrough, the store's last
/// position, {}, {entries with after < position < before}}` (the shape of a resume's
/// read). Each history is read from
/// its newest end back to `after`, so only the hole crosses the network.
const READ_BETWEEN: &str = r#"
local after, before, tokens = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local revoked = {}
for i = 5, 4 + tokens do
  if redis.call('EXISTS', p .. 'revoked:' .. ARGV[i]) == 1 then revoked[#revoked + 1] = ARGV[i] end
end
local out = {redis.call('GET', p .. 'epoch') or '', revoked}
for i = 5 + tokens, #ARGV do
  local topic = ARGV[i]
  if is_live(topic) then
    out[#out + 1] = topic_read(topic, {}, entries_between(topic, after, before))
  end
end
return out
"#;

/// ARGV: prefix, id, node, record JSON, tenant ('' for none).
pub(crate) const ADD_CONNECTION: &str = r#"
add_connection(ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return 1
"#;

/// ARGV: prefix, node, then per connection: id, record JSON, tenant ('' for none), the
/// number of its topics, its topics. Registers a batch of this node's connections and
/// their topics again (after Redis forgot them) in one round trip; adding or joining
/// again changes nothing.
const RESTORE: &str = r#"
local node, now, i = ARGV[2], clock(), 3
while i <= #ARGV do
  local id, record, tenant, count = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  add_connection(id, node, record, tenant)
  for t = 1, count do join(ARGV[i + 3 + t], node, id, now) end
  i = i + 4 + count
end
return 1
"#;

/// ARGV: prefix, node, grace in ms, ids... Takes connections Redis holds for this node but
/// the node does not (a resync that raced their close) out of their topics and the
/// directory.
const DROP_CONNECTIONS: &str = r#"
local node, grace, now = ARGV[2], tonumber(ARGV[3]), clock()
for i = 4, #ARGV do
  local id = ARGV[i]
  local record = redis.call('GET', p .. 'conn:' .. id)
  local tenant = ''
  if record then
    for _, topic in ipairs(cjson.decode(record).topics or {}) do leave(topic, node, id, now, grace) end
    tenant = tenant_of(record)
  end
  remove_connection(id, node, tenant)
end
return 1
"#;

/// ARGV: prefix, id, node, tenant ('' for none).
pub(crate) const REMOVE_CONNECTION: &str = r#"
remove_connection(ARGV[2], ARGV[3], ARGV[4])
return 1
"#;

/// ARGV: prefix, start, stop, tenant ('' for all). Returns the total, then each record's
/// JSON.
pub(crate) const CONNECTIONS: &str = r#"
local index = d .. 'conns'
if ARGV[4] ~= '' then index = d .. 'tenant:' .. ARGV[4] .. ':conns' end
local out = {redis.call('ZCARD', index)}
for _, id in ipairs(redis.call('ZRANGE', index, ARGV[2], ARGV[3])) do
  local record = redis.call('GET', d .. 'conn:' .. id)
  if record then out[#out + 1] = record end
end
return out
"#;

/// ARGV: prefix, start, stop, tenant ('' for all). Returns the total, then per topic:
/// name, connections, events, createdAt, lastEventAt ('' when none). A tenant's topics
/// are `tenant~name`, a range of the sorted set (`~` is 0x7E, so 0x7F ends it).
const TOPICS: &str = r#"
local start, stop, tenant = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local names, out
if tenant == '' then
  out = {redis.call('ZCARD', p .. 'topics')}
  names = redis.call('ZRANGE', p .. 'topics', start, stop)
else
  local low, high = '[' .. tenant .. '~', '(' .. tenant .. string.char(127)
  out = {redis.call('ZLEXCOUNT', p .. 'topics', low, high)}
  names = redis.call('ZRANGEBYLEX', p .. 'topics', low, high, 'LIMIT', start, stop - start + 1)
end
for _, topic in ipairs(names) do
  local connections = 0
  for _, n in ipairs(redis.call('HVALS', key(topic, 'nodes'))) do
    connections = connections + tonumber(n)
  end
  local meta = redis.call('HMGET', key(topic, 'meta'), 'seq', 'createdAt', 'lastEventAt')
  out[#out + 1] = topic
  out[#out + 1] = connections
  out[#out + 1] = meta[1] or '0'
  out[#out + 1] = meta[2] or '0'
  out[#out + 1] = meta[3] or ''
end
return out
"#;

/// ARGV: prefix, node, ttl in ms, hostname, advertised host, started at, epoch
/// candidate. Returns whether the node was registered before this call (1, or 0 if it is
/// new or was lost), the epoch, and how many connections Redis holds for the node. Also
/// sends the node a marker on its channel, numbered like its deliveries and carrying the
/// position given out last: a delivery lost while nothing else is published still shows
/// as a hole within one heartbeat, and the node knows how far to read back.
const HEARTBEAT: &str = r#"
local node, ttl = ARGV[2], tonumber(ARGV[3])
local now = clock()
local ep = epoch(ARGV[7])
local identity = p .. 'node:' .. node
local existed = redis.call('EXISTS', identity)
redis.call('HSET', identity, 'hostname', ARGV[4], 'advertiseHost', ARGV[5], 'startedAt', ARGV[6], 'lastBeat', now)
redis.call('PEXPIRE', identity, ttl)
redis.call('ZADD', p .. 'nodes', now + ttl, node)
deliver(node, ep, redis.call('GET', p .. 'position') or 0, '')
return {existed, ep, redis.call('SCARD', p .. 'node:' .. node .. ':conns')}
"#;

/// ARGV: prefix. Returns per live node: id, hostname, advertised host, started at,
/// connections, topics, last heartbeat ('' if unknown).
pub(crate) const NODES: &str = r#"
local out = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', d .. 'nodes', '(' .. clock(), '+inf')) do
  local identity = redis.call('HMGET', d .. 'node:' .. node, 'hostname', 'advertiseHost', 'startedAt', 'lastBeat')
  out[#out + 1] = node
  out[#out + 1] = identity[1] or ''
  out[#out + 1] = identity[2] or ''
  out[#out + 1] = identity[3] or '0'
  out[#out + 1] = redis.call('SCARD', d .. 'node:' .. node .. ':conns')
  out[#out + 1] = redis.call('SCARD', d .. 'node:' .. node .. ':topics')
  out[#out + 1] = identity[4] or ''
end
return out
"#;

/// ARGV: prefix, grace in ms, and optionally a node to clear even though it lives (a
/// node clearing its own leftovers before it registers again). Removes every node whose
/// heartbeat expired, with its connections and its share of every topic, and every topic
/// whose grace ran out. Returns how many nodes it removed.
const REAP: &str = r#"
local grace = tonumber(ARGV[2])
local now = clock()
local dead = redis.call('ZRANGEBYSCORE', p .. 'nodes', '-inf', now)
if ARGV[3] then dead[#dead + 1] = ARGV[3] end
for _, node in ipairs(dead) do
  local mine = p .. 'node:' .. node .. ':topics'
  -- A node of the version before idempotent membership kept a hash here.
  local listed = redis.call('TYPE', mine)['ok'] == 'hash' and 'HKEYS' or 'SMEMBERS'
  for _, topic in ipairs(redis.call(listed, mine)) do
    redis.call('DEL', key(topic, 'conns:' .. node))
    redis.call('HDEL', key(topic, 'nodes'), node)
    orphan_or_forget(topic, now, grace)
  end
  local conns = p .. 'node:' .. node .. ':conns'
  for _, id in ipairs(redis.call('SMEMBERS', conns)) do
    local record = redis.call('GET', p .. 'conn:' .. id)
    remove_connection(id, node, record and tenant_of(record) or '')
  end
  redis.call('DEL', mine, conns, p .. 'node:' .. node)
  redis.call('ZREM', p .. 'nodes', node)
end
for _, topic in ipairs(redis.call('ZRANGEBYSCORE', p .. 'orphans', '-inf', now)) do
  if redis.call('EXISTS', key(topic, 'nodes')) == 0 then
    forget(topic)
  else
    redis.call('ZREM', p .. 'orphans', topic)
  end
end
return #dead
"#;

/// ARGV: prefix, token id, milliseconds until it expires anyway. Records the revocation
/// and tells every node on the revocations channel.
pub(crate) const REVOKE: &str = r#"
local id, ttl = ARGV[2], tonumber(ARGV[3])
if ttl > 0 then redis.call('SET', d .. 'revoked:' .. id, 1, 'PX', ttl) end
redis.call(publish, d .. 'revocations', id)
return 1
"#;

/// Every script, each with the prelude.
pub(crate) struct Scripts {
    pub(crate) join: fred::types::scripts::Script,
    pub(crate) leave: fred::types::scripts::Script,
    pub(crate) live: fred::types::scripts::Script,
    pub(crate) append: fred::types::scripts::Script,
    pub(crate) append_all: fred::types::scripts::Script,
    pub(crate) tail: fred::types::scripts::Script,
    pub(crate) read_since: fred::types::scripts::Script,
    pub(crate) read_between: fred::types::scripts::Script,
    pub(crate) add_connection: fred::types::scripts::Script,
    pub(crate) remove_connection: fred::types::scripts::Script,
    pub(crate) restore: fred::types::scripts::Script,
    pub(crate) drop_connections: fred::types::scripts::Script,
    pub(crate) connections: fred::types::scripts::Script,
    pub(crate) topics: fred::types::scripts::Script,
    pub(crate) heartbeat: fred::types::scripts::Script,
    pub(crate) nodes: fred::types::scripts::Script,
    pub(crate) reap: fred::types::scripts::Script,
    pub(crate) revoke: fred::types::scripts::Script,
}

impl Default for Scripts {
    fn default() -> Self {
        let script = |body: &str| {
            fred::types::scripts::Script::from_lua(format!(
                "local p = ARGV[1]\nlocal d = p\nlocal publish = 'PUBLISH'\n{CLOCK}{DIRECTORY}{PRELUDE}{body}"
            ))
        };
        Self {
            join: script(JOIN),
            leave: script(LEAVE),
            live: script(LIVE),
            append: script(&format!("{APPEND_ONE}{APPEND}")),
            append_all: script(&format!("{APPEND_ONE}{APPEND_ALL}")),
            tail: script(TAIL),
            read_since: script(READ_SINCE),
            read_between: script(READ_BETWEEN),
            add_connection: script(ADD_CONNECTION),
            remove_connection: script(REMOVE_CONNECTION),
            restore: script(RESTORE),
            drop_connections: script(DROP_CONNECTIONS),
            connections: script(CONNECTIONS),
            topics: script(TOPICS),
            heartbeat: script(HEARTBEAT),
            nodes: script(NODES),
            reap: script(REAP),
            revoke: script(REVOKE),
        }
    }
}
