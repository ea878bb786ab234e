//! The Lua scripts of the Redis Cluster mode ([`crate::RedisClusterStore`]).
//!
//! Every script touches one hash slot, so Redis Cluster can run it: a topic's keys share
//! the hash tag `{t:<topic>}` (topic names hold no braces), the directory's keys the tag
//! `{dir}`, and each script names one of its keys in `KEYS[1]` so the client sends it to
//! the shard that owns the slot. Topic scripts never touch the directory and the other
//! way round; the store sequences the two where a change needs both. A topic is its own
//! sequencer: its `seq` is the position of its events, counted within the topic's epoch
//! (a random id the topic takes when its keys start from nothing). The key layout is in
//! `docs/cluster.md`.

use crate::scripts::{CLOCK, DIRECTORY};

/// Helpers of the topic scripts. `ARGV[1]` is the key prefix, `ARGV[2]` the topic.
const TOPIC: &str = r#"
local p, topic = ARGV[1], ARGV[2]
local function key(what) return p .. '{t:' .. topic .. '}:' .. what end
local function in_grace()
  local deadline = redis.call('HGET', key('meta'), 'graceUntil')
  return deadline and tonumber(deadline) > clock()
end
local function is_live()
  return redis.call('EXISTS', key('nodes')) == 1 or in_grace()
end
local function forget()
  for _, node in ipairs(redis.call('HKEYS', key('nodes'))) do
    redis.call('DEL', key('conns:' .. node))
  end
  redis.call('DEL', key('nodes'), key('meta'), key('history'), key('ids'))
end
-- After a node's share of the topic went: 0 while others hold it, else the topic goes
-- into its grace (1 and its deadline) or is forgotten (2).
local function orphan_or_forget(grace)
  if redis.call('EXISTS', key('nodes')) == 1 then return {0} end
  if grace > 0 then
    local deadline = clock() + grace
    redis.call('HSET', key('meta'), 'graceUntil', deadline)
    return {1, deadline}
  end
  forget()
  return {2}
end
-- A history entry is `seq shared id \n type \n publishedAt \n data`, where `shared` lists
-- the other topics of the publish, comma-separated ('-' for none).
local function entry_of(entry)
  local seq, shared, id = string.match(entry, '^(%d+) (%S+) ([^\n]*)\n')
  return tonumber(seq), shared, id
end
-- The history's entries after `after`, oldest first, read from the newest end back a
-- growing chunk at a time, so a read costs what it returns.
local function entries_after(after)
  local history = key('history')
  local newest_first, stop, step, done = {}, redis.call('LLEN', history) - 1, 16, false
  while stop >= 0 and not done do
    local start = math.max(0, stop - step + 1)
    local chunk = redis.call('LRANGE', history, start, stop)
    for k = #chunk, 1, -1 do
      if entry_of(chunk[k]) <= after then
        done = true
        break
      end
      newest_first[#newest_first + 1] = chunk[k]
    end
    stop, step = start - 1, step * 2
  end
  local entries = {}
  for k = #newest_first, 1, -1 do entries[#entries + 1] = newest_first[k] end
  return entries
end
local function meta(...)
  return redis.call('HMGET', key('meta'), ...)
end
"#;

/// ARGV: prefix, topic, node, connection id, epoch candidate. Returns whether the topic
/// came into being (1) or was live (0), its epoch and its last sequence number.
const JOIN: &str = r#"
if not is_live() then
  forget()
  redis.call('HSET', key('meta'), 'epoch', ARGV[5], 'createdAt', clock(), 'seq', 0, 'evictedThrough', 0)
end
redis.call('HDEL', key('meta'), 'graceUntil')
local members = key('conns:' .. ARGV[3])
local created = redis.call('SADD', members, ARGV[4])
redis.call('HSET', key('nodes'), ARGV[3], redis.call('SCARD', members))
local m = meta('epoch', 'seq', 'createdAt')
return {created, m[1], m[2], m[3]}
"#;

/// ARGV: prefix, topic, node, grace in ms, connection ids... Takes the connections out
/// of the topic (leaving one never joined changes nothing). Returns how many of the
/// node's connections still follow the topic, then what [`TOPIC`]'s `orphan_or_forget`
/// says when none of the node's do.
const LEAVE: &str = r#"
local members = key('conns:' .. ARGV[3])
for i = 5, #ARGV do redis.call('SREM', members, ARGV[i]) end
local left = redis.call('SCARD', members)
if left > 0 then
  redis.call('HSET', key('nodes'), ARGV[3], left)
  return {left}
end
redis.call('HDEL', key('nodes'), ARGV[3])
local after = orphan_or_forget(tonumber(ARGV[4]))
return {0, after[1], after[2]}
"#;

/// ARGV: prefix, topic, node, grace in ms. Takes a (dead) node's connections out of the
/// topic. Returns what `orphan_or_forget` says.
const DROP_NODE: &str = r#"
redis.call('DEL', key('conns:' .. ARGV[3]))
redis.call('HDEL', key('nodes'), ARGV[3])
return orphan_or_forget(tonumber(ARGV[4]))
"#;

/// ARGV: prefix, topic. Forgets the topic when nobody holds it and its grace ran out.
/// Returns 1 when the topic is gone (or was), 0 when it lives.
const SWEEP: &str = r#"
if is_live() then return 0 end
forget()
return 1
"#;

/// ARGV: prefix, topic. Returns 1 or 0.
const LIVE: &str = r#"
return is_live() and 1 or 0
"#;

/// The append of one event to the script's topic, shared by [`APPEND`] and
/// [`APPEND_RUN`]: `keep` the history length, `blob` the event, `id` its id, `at` the
/// publishing node's clock (only shown), `shared` the publish's other topics ('-' for
/// none). Returns 0 when the topic is not live; else 1 (appended) or 2 (a retry: the
/// history still holds the id), the topic's epoch and the event's sequence number. The
/// event goes to every node following the topic on the topic's sharded channel, inside
/// the script, so nodes hear a topic's events in sequence order.
const APPEND_ONE: &str = r#"
local function append(keep, blob, id, at, shared)
  if not is_live() then return {0} end
  local m = meta('epoch')
  if keep > 0 then
    local first = redis.call('HGET', key('ids'), id)
    if first then return {2, m[1], first} end
  end
  local seq = redis.call('HINCRBY', key('meta'), 'seq', 1)
  local evicted = 0
  if keep > 0 then
    local history = key('history')
    redis.call('HSET', key('ids'), id, seq)
    local length = redis.call('RPUSH', history, seq .. ' ' .. shared .. ' ' .. blob)
    while length > keep do
      -- A history holds an id at most once (a second publish of it is a retry), so the
      -- index entry of an evicted event is that event's.
      local eseq, _, eid = entry_of(redis.call('LPOP', history))
      redis.call('HDEL', key('ids'), eid)
      evicted = eseq
      length = length - 1
    end
  else
    evicted = seq
  end
  if evicted > 0 then
    redis.call('HSET', key('meta'), 'lastEventAt', at, 'evictedThrough', evicted)
  else
    redis.call('HSET', key('meta'), 'lastEventAt', at)
  end
  redis.call('SPUBLISH', key('events'), m[1] .. ' ' .. seq .. ' ' .. shared .. '\n' .. blob)
  return {1, m[1], seq}
end
"#;

/// ARGV: prefix, topic, history length, event blob, event id, the publishing node's clock,
/// the event's other topics (comma-separated, `-` for none). Returns what [`APPEND_ONE`]
/// does.
const APPEND: &str = r#"
return append(tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], ARGV[7])
"#;

/// ARGV: prefix, topic, history length, the publishing node's clock, then a blob and an
/// id for each event: a batch's consecutive events to this one topic alone, appended one
/// after another in one script. Returns one [`APPEND_ONE`] answer per event.
const APPEND_RUN: &str = r#"
local keep, at, answers = tonumber(ARGV[3]), ARGV[4], {}
for i = 5, #ARGV - 1, 2 do
  answers[#answers + 1] = append(keep, ARGV[i], ARGV[i + 1], at, '-')
end
return answers
"#;

/// ARGV: prefix, topic, limit. Returns 0 when the topic is not live, else 1 and the
/// history entries, oldest first.
const TAIL: &str = r#"
if not is_live() then return {0} end
local out = {1}
for _, entry in ipairs(redis.call('LRANGE', key('history'), -tonumber(ARGV[3]), -1)) do
  out[#out + 1] = entry
end
return out
"#;

/// ARGV: prefix, topic, event id. A resume's read of one topic: 0 when it is not live,
/// else `{1, epoch, evictedThrough, seq, {seq of the id}, {the id's other topics},
/// {entries after the id}}` (no entries when the history does not hold the id).
const READ_SINCE: &str = r#"
if not is_live() then return {0} end
local m = meta('epoch', 'evictedThrough', 'seq')
local held = redis.call('HGET', key('ids'), ARGV[3])
if not held then return {1, m[1], m[2] or '0', m[3] or '0', {}, {}, {}} end
local seq = tonumber(held)
local entries = redis.call('LRANGE', key('history'), 0, 0)
local oldest = entries[1] and entry_of(entries[1]) or seq
-- The id's own entry says which other topics its publish went to.
local own = redis.call('LINDEX', key('history'), seq - oldest)
local shared = {}
if own then
  local _, list = entry_of(own)
  if list ~= '-' then
    for t in string.gmatch(list, '[^,]+') do shared[#shared + 1] = t end
  end
end
return {1, m[1], m[2] or '0', m[3] or '0', {seq}, shared, entries_after(seq)}
"#;

/// ARGV: prefix, topic, after. What a node that missed some of the topic's messages reads
/// back: 0 when the topic is not live, else `{1, epoch, evictedThrough, seq, entries
/// after `after`}`.
const READ_AFTER: &str = r#"
if not is_live() then return {0} end
local m = meta('epoch', 'evictedThrough', 'seq')
return {1, m[1], m[2] or '0', m[3] or '0', entries_after(tonumber(ARGV[3]))}
"#;

/// ARGV: prefix, topic. Returns the topic's connections, events, createdAt and
/// lastEventAt ('' when none), or nothing when it is not live.
const INFO: &str = r#"
if not is_live() then return {} end
local connections = 0
for _, n in ipairs(redis.call('HVALS', key('nodes'))) do connections = connections + tonumber(n) end
local m = meta('seq', 'createdAt', 'lastEventAt')
return {connections, m[1] or '0', m[2] or '0', m[3] or ''}
"#;

/// ARGV: prefix, node, topic, what: `follow` (the node's connections follow the topic,
/// which is live), `unfollow` (none of them does any more), `orphan` with the grace's
/// deadline, or `gone`. Keeps the directory's index of live topics (scored 0, or by
/// the end of their grace) and of each node's topics.
const INDEX: &str = r#"
local node, topic, what = ARGV[2], ARGV[3], ARGV[4]
if what == 'follow' then
  redis.call('SADD', d .. 'node:' .. node .. ':topics', topic)
  redis.call('ZADD', d .. 'topics', 0, topic)
elseif what == 'unfollow' then
  redis.call('SREM', d .. 'node:' .. node .. ':topics', topic)
elseif what == 'orphan' then
  redis.call('SREM', d .. 'node:' .. node .. ':topics', topic)
  redis.call('ZADD', d .. 'topics', ARGV[5], topic)
elseif what == 'gone' then
  redis.call('SREM', d .. 'node:' .. node .. ':topics', topic)
  redis.call('ZREM', d .. 'topics', topic)
end
return 1
"#;

/// ARGV: prefix, start, stop, tenant ('' for all). Returns the total, then the names of
/// the page; the store reads each topic's figures from its own shard.
const TOPICS: &str = r#"
local start, stop, tenant = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if tenant == '' then
  local out = {redis.call('ZCARD', d .. 'topics')}
  for _, t in ipairs(redis.call('ZRANGE', d .. 'topics', start, stop)) do out[#out + 1] = t end
  return out
end
local low, high = '[' .. tenant .. '~', '(' .. tenant .. string.char(127)
local out = {redis.call('ZLEXCOUNT', d .. 'topics', low, high)}
for _, t in ipairs(redis.call('ZRANGEBYLEX', d .. 'topics', low, high, 'LIMIT', start, stop - start + 1)) do
  out[#out + 1] = t
end
return out
"#;

/// ARGV: prefix, node, ttl in ms, hostname, advertised host, started at. Returns whether
/// the node was registered before this call and how many connections the directory
/// holds for it.
const HEARTBEAT: &str = r#"
local node, ttl = ARGV[2], tonumber(ARGV[3])
local identity = d .. 'node:' .. node
local existed = redis.call('EXISTS', identity)
redis.call('HSET', identity, 'hostname', ARGV[4], 'advertiseHost', ARGV[5], 'startedAt', ARGV[6], 'lastBeat', clock())
redis.call('PEXPIRE', identity, ttl)
redis.call('ZADD', d .. 'nodes', clock() + ttl, node)
return {existed, redis.call('SCARD', d .. 'node:' .. node .. ':conns')}
"#;

/// ARGV: prefix, and optionally a node to count as dead even though it lives (a node
/// clearing its own leftovers before it registers). Returns per dead node its id and its
/// topics, and the topics whose grace ran out; the store takes the nodes out of those
/// topics on their shards and then calls [`FORGET_NODE`].
const DEAD: &str = r#"
local dead = redis.call('ZRANGEBYSCORE', d .. 'nodes', '-inf', clock())
if ARGV[2] then dead[#dead + 1] = ARGV[2] end
local out = {}
for _, node in ipairs(dead) do
  out[#out + 1] = {node, redis.call('SMEMBERS', d .. 'node:' .. node .. ':topics')}
end
return {out, redis.call('ZRANGEBYSCORE', d .. 'topics', 1, clock())}
"#;

/// ARGV: prefix, node. Removes a dead node's connections and registration from the
/// directory, once its topics no longer hold it.
const FORGET_NODE: &str = r#"
local node = ARGV[2]
local conns = d .. 'node:' .. node .. ':conns'
for _, id in ipairs(redis.call('SMEMBERS', conns)) do
  local record = redis.call('GET', d .. 'conn:' .. id)
  remove_connection(id, node, record and tenant_of(record) or '')
end
redis.call('DEL', conns, d .. 'node:' .. node .. ':topics', d .. 'node:' .. node)
redis.call('ZREM', d .. 'nodes', node)
return 1
"#;

/// The topic scripts, each with the clock and the topic helpers.
pub(crate) struct TopicScripts {
    pub(crate) join: fred::types::scripts::Script,
    pub(crate) leave: fred::types::scripts::Script,
    pub(crate) drop_node: fred::types::scripts::Script,
    pub(crate) sweep: fred::types::scripts::Script,
    pub(crate) live: fred::types::scripts::Script,
    pub(crate) append: fred::types::scripts::Script,
    pub(crate) append_run: fred::types::scripts::Script,
    pub(crate) tail: fred::types::scripts::Script,
    pub(crate) read_since: fred::types::scripts::Script,
    pub(crate) read_after: fred::types::scripts::Script,
    pub(crate) info: fred::types::scripts::Script,
}

/// The directory scripts, each with the clock and the directory helpers.
pub(crate) struct DirectoryScripts {
    pub(crate) index: fred::types::scripts::Script,
    pub(crate) topics: fred::types::scripts::Script,
    pub(crate) heartbeat: fred::types::scripts::Script,
    pub(crate) dead: fred::types::scripts::Script,
    pub(crate) forget_node: fred::types::scripts::Script,
    pub(crate) add_connection: fred::types::scripts::Script,
    pub(crate) remove_connection: fred::types::scripts::Script,
    pub(crate) connections: fred::types::scripts::Script,
    pub(crate) nodes: fred::types::scripts::Script,
    pub(crate) revoke: fred::types::scripts::Script,
}

/// Every script of the cluster mode.
pub(crate) struct ClusterScripts {
    pub(crate) topic: TopicScripts,
    pub(crate) directory: DirectoryScripts,
}

impl Default for ClusterScripts {
    fn default() -> Self {
        let topic =
            |body: &str| fred::types::scripts::Script::from_lua(format!("{CLOCK}{TOPIC}{body}"));
        // The directory of the cluster mode: its keys under the `{dir}` tag, revocations
        // on a sharded channel.
        let directory = |body: &str| {
            fred::types::scripts::Script::from_lua(format!(
                "local p = ARGV[1]\nlocal d = p .. '{{dir}}:'\nlocal publish = 'SPUBLISH'\n{CLOCK}{DIRECTORY}{body}"
            ))
        };
        Self {
            topic: TopicScripts {
                join: topic(JOIN),
                leave: topic(LEAVE),
                drop_node: topic(DROP_NODE),
                sweep: topic(SWEEP),
                live: topic(LIVE),
                append: topic(&format!("{APPEND_ONE}{APPEND}")),
                append_run: topic(&format!("{APPEND_ONE}{APPEND_RUN}")),
                tail: topic(TAIL),
                read_since: topic(READ_SINCE),
                read_after: topic(READ_AFTER),
                info: topic(INFO),
            },
            directory: DirectoryScripts {
                index: directory(INDEX),
                topics: directory(TOPICS),
                heartbeat: directory(HEARTBEAT),
                dead: directory(DEAD),
                forget_node: directory(FORGET_NODE),
                add_connection: directory(crate::scripts::ADD_CONNECTION),
                remove_connection: directory(crate::scripts::REMOVE_CONNECTION),
                connections: directory(crate::scripts::CONNECTIONS),
                nodes: directory(crate::scripts::NODES),
                revoke: directory(crate::scripts::REVOKE),
            },
        }
    }
}
