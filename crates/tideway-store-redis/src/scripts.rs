//! The Lua scripts behind every message to a topic or the directory object.
//!
//! Redis runs one script at a time, so each script is one atomic message, like a Durable
//! Object handling one request. Every script takes the key prefix as `ARGV[1]`; keys are
//! built inside the scripts, so the store needs one Redis (or a primary with replicas),
//! not Redis Cluster. The key layout is in `docs/cluster.md`.

/// Helpers every script starts with.
const PRELUDE: &str = r#"
local p = ARGV[1]
local function key(topic, what) return p .. 'topic:' .. topic .. ':' .. what end
local function is_live(topic, now)
  if redis.call('EXISTS', key(topic, 'nodes')) == 1 then return true end
  local deadline = redis.call('ZSCORE', p .. 'orphans', topic)
  return deadline ~= false and deadline ~= nil and tonumber(deadline) > now
end
local function forget(topic)
  redis.call('DEL', key(topic, 'nodes'), key(topic, 'meta'), key(topic, 'history'))
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
"#;

/// ARGV: prefix, topic, node, now.
const JOIN: &str = r#"
local topic, node, now = ARGV[2], ARGV[3], tonumber(ARGV[4])
if not is_live(topic, now) then
  forget(topic)
  redis.call('HSET', key(topic, 'meta'), 'createdAt', now, 'events', 0, 'seq', 0)
  redis.call('ZADD', p .. 'topics', 0, topic)
end
redis.call('ZREM', p .. 'orphans', topic)
redis.call('HINCRBY', key(topic, 'nodes'), node, 1)
redis.call('HINCRBY', p .. 'node:' .. node .. ':topics', topic, 1)
return 1
"#;

/// ARGV: prefix, topic, node, now, grace in ms.
const LEAVE: &str = r#"
local topic, node, now, grace = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('HINCRBY', key(topic, 'nodes'), node, -1) <= 0 then
  redis.call('HDEL', key(topic, 'nodes'), node)
end
local mine = p .. 'node:' .. node .. ':topics'
if redis.call('HINCRBY', mine, topic, -1) <= 0 then redis.call('HDEL', mine, topic) end
orphan_or_forget(topic, now, grace)
return 1
"#;

/// ARGV: prefix, now, topics... Returns 1 or 0 per topic.
const LIVE: &str = r#"
local now = tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV do
  out[#out + 1] = is_live(ARGV[i], now) and 1 or 0
end
return out
"#;

/// ARGV: prefix, now, history length, event blob, topics...
/// Returns the position, then topic and sequence number of each topic appended to.
/// The publishes to each node's channel happen inside the script, so every node receives
/// publishes in position order.
const APPEND: &str = r#"
local now, keep, blob = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local pos = redis.call('INCR', p .. 'position')
local routes, order, out = {}, {}, {pos}
for i = 5, #ARGV do
  local topic = ARGV[i]
  if is_live(topic, now) then
    local meta = key(topic, 'meta')
    local seq = redis.call('HINCRBY', meta, 'seq', 1)
    redis.call('HINCRBY', meta, 'events', 1)
    redis.call('HSET', meta, 'lastEventAt', now)
    if keep > 0 then
      redis.call('RPUSH', key(topic, 'history'), seq .. ' ' .. pos .. ' ' .. blob)
      redis.call('LTRIM', key(topic, 'history'), -keep, -1)
    end
    for _, node in ipairs(redis.call('HKEYS', key(topic, 'nodes'))) do
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
end
for _, node in ipairs(order) do
  redis.call('PUBLISH', p .. 'node:' .. node .. ':events',
    pos .. '\n' .. table.concat(routes[node], '\n') .. '\n\n' .. blob)
end
return out
"#;

/// ARGV: prefix, now, topic, limit. Returns 0 when the topic is not live, else 1 and
/// the history entries (`seq position blob`), oldest first.
const TAIL: &str = r#"
local now, topic, limit = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if not is_live(topic, now) then return {0} end
local out = {1}
for _, entry in ipairs(redis.call('LRANGE', key(topic, 'history'), -limit, -1)) do
  out[#out + 1] = entry
end
return out
"#;

/// ARGV: prefix, id, node, record JSON, tenant ('' for none).
const ADD_CONNECTION: &str = r#"
local id, node, tenant = ARGV[2], ARGV[3], ARGV[5]
local arrival = redis.call('INCR', p .. 'arrivals')
redis.call('SET', p .. 'conn:' .. id, ARGV[4])
redis.call('ZADD', p .. 'conns', arrival, id)
if tenant ~= '' then redis.call('ZADD', p .. 'tenant:' .. tenant .. ':conns', arrival, id) end
redis.call('SADD', p .. 'node:' .. node .. ':conns', id)
return 1
"#;

/// ARGV: prefix, id, node, tenant ('' for none).
const REMOVE_CONNECTION: &str = r#"
local id, node, tenant = ARGV[2], ARGV[3], ARGV[4]
redis.call('DEL', p .. 'conn:' .. id)
redis.call('ZREM', p .. 'conns', id)
if tenant ~= '' then redis.call('ZREM', p .. 'tenant:' .. tenant .. ':conns', id) end
redis.call('SREM', p .. 'node:' .. node .. ':conns', id)
return 1
"#;

/// ARGV: prefix, start, stop, tenant ('' for all). Returns the total, then each record's
/// JSON.
const CONNECTIONS: &str = r#"
local index = p .. 'conns'
if ARGV[4] ~= '' then index = p .. 'tenant:' .. ARGV[4] .. ':conns' end
local out = {redis.call('ZCARD', index)}
for _, id in ipairs(redis.call('ZRANGE', index, ARGV[2], ARGV[3])) do
  local record = redis.call('GET', p .. 'conn:' .. id)
  if record then out[#out + 1] = record end
end
return out
"#;

/// ARGV: prefix, now, start, stop, tenant ('' for all). Returns the total, then per topic:
/// name, connections, events, createdAt, lastEventAt ('' when none). A tenant's topics
/// are `tenant~name`, a range of the sorted set (`~` is 0x7E, so 0x7F ends it).
const TOPICS: &str = r#"
local now, start, stop, tenant = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
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
  local meta = redis.call('HMGET', key(topic, 'meta'), 'events', 'createdAt', 'lastEventAt')
  out[#out + 1] = topic
  out[#out + 1] = connections
  out[#out + 1] = meta[1] or '0'
  out[#out + 1] = meta[2] or '0'
  out[#out + 1] = meta[3] or ''
end
return out
"#;

/// ARGV: prefix, node, expires at, ttl in ms, hostname, advertised host, started at.
/// Returns 1 if the node was registered before this call, 0 if it is new (or was lost).
const HEARTBEAT: &str = r#"
local node = ARGV[2]
local identity = p .. 'node:' .. node
local existed = redis.call('EXISTS', identity)
redis.call('HSET', identity, 'hostname', ARGV[5], 'advertiseHost', ARGV[6], 'startedAt', ARGV[7])
redis.call('PEXPIRE', identity, ARGV[4])
redis.call('ZADD', p .. 'nodes', ARGV[3], node)
return existed
"#;

/// ARGV: prefix, now. Returns per live node: id, hostname, advertised host, started at,
/// connections.
const NODES: &str = r#"
local out = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', p .. 'nodes', '(' .. ARGV[2], '+inf')) do
  local identity = redis.call('HMGET', p .. 'node:' .. node, 'hostname', 'advertiseHost', 'startedAt')
  out[#out + 1] = node
  out[#out + 1] = identity[1] or ''
  out[#out + 1] = identity[2] or ''
  out[#out + 1] = identity[3] or '0'
  out[#out + 1] = redis.call('SCARD', p .. 'node:' .. node .. ':conns')
end
return out
"#;

/// ARGV: prefix, now, grace in ms, and optionally a node to clear even though it lives
/// (a node clearing its own leftovers before it registers again). Removes every node
/// whose heartbeat expired, with its connections and its share of every topic, and every
/// topic whose grace ran out. Returns how many nodes it removed.
const REAP: &str = r#"
local now, grace = tonumber(ARGV[2]), tonumber(ARGV[3])
local dead = redis.call('ZRANGEBYSCORE', p .. 'nodes', '-inf', now)
if ARGV[4] then dead[#dead + 1] = ARGV[4] end
for _, node in ipairs(dead) do
  local mine = p .. 'node:' .. node .. ':topics'
  for _, topic in ipairs(redis.call('HKEYS', mine)) do
    redis.call('HDEL', key(topic, 'nodes'), node)
    orphan_or_forget(topic, now, grace)
  end
  local conns = p .. 'node:' .. node .. ':conns'
  for _, id in ipairs(redis.call('SMEMBERS', conns)) do
    local record = redis.call('GET', p .. 'conn:' .. id)
    if record then
      local first = cjson.decode(record).topics[1] or ''
      local tenant = string.match(first, '^([^~]+)~')
      if tenant then redis.call('ZREM', p .. 'tenant:' .. tenant .. ':conns', id) end
    end
    redis.call('DEL', p .. 'conn:' .. id)
    redis.call('ZREM', p .. 'conns', id)
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
const REVOKE: &str = r#"
local id, ttl = ARGV[2], tonumber(ARGV[3])
if ttl > 0 then redis.call('SET', p .. 'revoked:' .. id, 1, 'PX', ttl) end
redis.call('PUBLISH', p .. 'revocations', id)
return 1
"#;

/// Every script, each with the prelude.
pub(crate) struct Scripts {
    pub(crate) join: fred::types::scripts::Script,
    pub(crate) leave: fred::types::scripts::Script,
    pub(crate) live: fred::types::scripts::Script,
    pub(crate) append: fred::types::scripts::Script,
    pub(crate) tail: fred::types::scripts::Script,
    pub(crate) add_connection: fred::types::scripts::Script,
    pub(crate) remove_connection: fred::types::scripts::Script,
    pub(crate) connections: fred::types::scripts::Script,
    pub(crate) topics: fred::types::scripts::Script,
    pub(crate) heartbeat: fred::types::scripts::Script,
    pub(crate) nodes: fred::types::scripts::Script,
    pub(crate) reap: fred::types::scripts::Script,
    pub(crate) revoke: fred::types::scripts::Script,
}

impl Default for Scripts {
    fn default() -> Self {
        let script =
            |body: &str| fred::types::scripts::Script::from_lua(format!("{PRELUDE}{body}"));
        Self {
            join: script(JOIN),
            leave: script(LEAVE),
            live: script(LIVE),
            append: script(APPEND),
            tail: script(TAIL),
            add_connection: script(ADD_CONNECTION),
            remove_connection: script(REMOVE_CONNECTION),
            connections: script(CONNECTIONS),
            topics: script(TOPICS),
            heartbeat: script(HEARTBEAT),
            nodes: script(NODES),
            reap: script(REAP),
            revoke: script(REVOKE),
        }
    }
}
