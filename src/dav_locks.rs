//! WebDAV locks in Redis, shared by every gateway of a deployment.
//!
//! [`RedisLockSpaces`] is the [`LockSpaces`] for deployments with several gateways: a
//! LOCK taken through one gateway blocks a PUT sent to another, and an UNLOCK or a
//! refresh works wherever it lands. Users stay isolated as with the in-process
//! [`filestore_webdav::MemLockSpaces`]: each user's locks live under a key of their own.
//!
//! # Key layout
//!
//! One hash per user, `<prefix>davlocks:<user_key>` (`filestore:davlocks:42`), with one
//! field per lock: the lock token (`urn:uuid:...`) maps to the record
//!
//! ```text
//! v1 <expires_ms> <timeout_ms> <seq> <shared 0|1> <deep 0|1> <path key> <payload JSON>
//! ```
//!
//! - `expires_ms` is in the Redis server's clock (`TIME`), so gateways with skewed clocks
//!   agree on when a lock runs out; `timeout_ms` is the granted timeout (at most
//!   [`MAX_LOCK_TIMEOUT`], `Timeout: Infinite` included, as `ExpiringLs` grants).
//! - `seq` orders the user's locks by creation, so that the conflicting lock reported is
//!   the one dav-server's `MemLs` would report.
//! - The path key is the locked path without the URL prefix, one `/<segment>` per
//!   segment, each segment percent-encoded (so it contains no space and no `/`), and
//!   `""` for the root. It is what the Lua scripts compare: `/a` covers `/a/b` because
//!   `/a/b` starts with `/a/`. A trailing slash does not matter (`/a/` and `/a` are the
//!   same resource), as in `MemLs`, which compares segments.
//! - The payload (`path` with its prefix, `principal`, `owner` as XML) is only read back
//!   to build the [`DavLock`] handed to dav-server; the scripts never parse it.
//!
//! The hash's TTL is pushed to the latest expiry of its locks, so a user's key disappears
//! on its own once every lock ran out. Expired fields inside a live hash are skipped by
//! every reader and deleted by the next LOCK or DELETE (lazy expiry: Redis 7.0 has no
//! per-field TTL).
//!
//! # Why one hash per user
//!
//! WebDAV clients check locks on every write (dav-server calls `check` for each PUT,
//! MKCOL, PROPPATCH, DELETE, COPY and MOVE). With a hash per user, `check` is one round
//! trip (`TIME` and `HGETALL` pipelined) that reads all of that user's locks and decides
//! locally. A user rarely holds more than a few locks at once (clients lock a file while
//! editing or uploading it), so reading them all is cheaper than any index, and the
//! common case, a user with no lock, is one lookup of a missing key.
//!
//! # Atomicity and failures
//!
//! LOCK, UNLOCK, refresh and DELETE are Lua scripts on that single key: Redis runs each
//! alone, so two gateways racing to lock the same path cannot both win, and a script
//! touching one key works on Redis Cluster too. On any Redis error the request fails
//! closed: LOCK and `check` report a conflict (dav-server answers 423 Locked, nothing is
//! written), UNLOCK and refresh fail, `discover` lists nothing, and a warning is logged.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use filestore_webdav::dav_server::davpath::DavPath;
use filestore_webdav::dav_server::ls::{DavLock, DavLockSystem, LsFuture};
use filestore_webdav::locks::MAX_LOCK_TIMEOUT;
use filestore_webdav::LockSpaces;
use futures_util::FutureExt;
use percent_encoding::{percent_encode, NON_ALPHANUMERIC};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use serde::{Deserialize, Serialize};
use xmltree::Element;

/// Shortest lock granted. `Timeout: Second-0` would otherwise make a lock that is gone
/// before the client can use it, and a zero TTL would delete the user's whole hash.
pub const MIN_LOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// Token of the lock reported as conflicting when the lock store cannot be reached: the
/// request is refused (fail closed) and the client sees 423 Locked.
pub const UNAVAILABLE_TOKEN: &str = "urn:filestore:lock-store-unavailable";

/// Errors of the Redis lock store. Request paths never return them to dav-server (its
/// trait has no error type); they are logged and turned into a refusal.
#[derive(Debug, thiserror::Error)]
pub enum RedisLocksError {
    /// The Redis URL does not parse.
    #[error("redis URL: {0}")]
    Url(#[source] redis::RedisError),
    /// Redis failed or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A record this version cannot read (written by another version, or damaged). The
    /// user's locks are then unknown, so operations on them are refused.
    #[error("malformed WebDAV lock record {token:?}: {why}")]
    Malformed { token: String, why: &'static str },
    /// A lock record could not be encoded.
    #[error("encoding a WebDAV lock record: {0}")]
    Encode(#[source] serde_json::Error),
    /// The OS random number generator failed (lock tokens are random).
    #[error("random lock token: {0}")]
    Random(getrandom::Error),
}

/// Lua helpers prepended to every script.
///
/// `now_ms` reads the Redis clock (one clock for all gateways). `covers(a, b)` is "path
/// key `a` is `b` or an ancestor of it". `keep_until` extends the hash's TTL to cover a
/// lock's expiry and never shortens it (other locks may run longer).
const LUA_PRELUDE: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local function parse(v)
  local exp, tmo, seq, sh, dp, pk = string.match(v, '^v1 (%d+) (%d+) (%d+) ([01]) ([01]) (%S*) ')
  if not exp then return nil end
  return {exp = tonumber(exp), seq = tonumber(seq), shared = sh == '1', deep = dp == '1', pk = pk}
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function covers(a, b)
  return a == b or string.sub(b, 1, #a + 1) == a .. '/'
end
local function keep_until(key, now, exp)
  if redis.call('PTTL', key) < exp - now then
    redis.call('PEXPIRE', key, string.format('%.0f', exp - now))
  end
end
local function malformed(token)
  return redis.error_reply('malformed WebDAV lock record ' .. token)
end
"#;

/// LOCK: `KEYS[1]` the user's hash; `ARGV` token, path key, shared, deep, timeout ms, payload.
/// Returns `{1, now, {token, record}}`, or `{0, now, {token, record, ...}}` with every
/// live lock in the way. Conflict rule (dav-server's `MemLs` with no submitted token):
/// unless both locks are shared, a lock conflicts with any lock on the same path, a deep
/// lock on an ancestor, and, for a deep request, any lock below.
const LUA_LOCK: &str = r#"
local now = now_ms()
local pk, shared, deep = ARGV[2], ARGV[3] == '1', ARGV[4] == '1'
local all = redis.call('HGETALL', KEYS[1])
local conflicts = {}
local seq = 0
for i = 1, #all, 2 do
  local l = parse(all[i + 1])
  if not l then return malformed(all[i]) end
  if l.exp <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    if l.seq > seq then seq = l.seq end
    if not (shared and l.shared)
      and (l.pk == pk or (l.deep and covers(l.pk, pk)) or (deep and covers(pk, l.pk))) then
      table.insert(conflicts, all[i])
      table.insert(conflicts, all[i + 1])
    end
  end
end
if #conflicts > 0 then return {0, now, conflicts} end
local tmo = tonumber(ARGV[5])
local exp = now + tmo
local rec = string.format('v1 %.0f %.0f %.0f %s %s %s %s', exp, tmo, seq + 1, ARGV[3], ARGV[4], pk, ARGV[6])
redis.call('HSET', KEYS[1], ARGV[1], rec)
keep_until(KEYS[1], now, exp)
return {1, now, {ARGV[1], rec}}
"#;

/// UNLOCK: ARGV token, path key. Like `MemLs`, the token must belong to a live lock on
/// the path or on an ancestor of it. Returns 1 if removed.
const LUA_UNLOCK: &str = r#"
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if not rec then return 0 end
local l = parse(rec)
if not l then return malformed(ARGV[1]) end
if l.exp <= now_ms() then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
if not covers(l.pk, ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"#;

/// Refresh: ARGV token, path key, timeout ms. Same lookup as UNLOCK; rewrites the expiry
/// and timeout and keeps the rest of the record. Returns `{1, now, {token, record}}` or
/// `{0, now, {}}`.
const LUA_REFRESH: &str = r#"
local now = now_ms()
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if not rec then return {0, now, {}} end
local l = parse(rec)
if not l then return malformed(ARGV[1]) end
if l.exp <= now then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return {0, now, {}}
end
if not covers(l.pk, ARGV[2]) then return {0, now, {}} end
local tmo = tonumber(ARGV[3])
local exp = now + tmo
rec = string.format('v1 %.0f %.0f ', exp, tmo) .. string.match(rec, '^v1 %d+ %d+ (.*)$')
redis.call('HSET', KEYS[1], ARGV[1], rec)
keep_until(KEYS[1], now, exp)
return {1, now, {ARGV[1], rec}}
"#;

/// DELETE (after a DELETE or MOVE of the resource): ARGV path key. Removes every lock at
/// the path and below, and expired locks on the way. Returns the number of live locks
/// removed.
const LUA_DELETE: &str = r#"
local now = now_ms()
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
  local l = parse(all[i + 1])
  if not l then return malformed(all[i]) end
  if l.exp <= now or covers(ARGV[1], l.pk) then
    redis.call('HDEL', KEYS[1], all[i])
    if l.exp > now then n = n + 1 end
  end
end
return n
"#;

struct Scripts {
    lock: Script,
    unlock: Script,
    refresh: Script,
    delete: Script,
}

impl Scripts {
    fn new() -> Self {
        // Built once: `Script` hashes its source, and calls go out as EVALSHA (EVAL on
        // the first call to a Redis that does not know the script yet).
        let script = |body: &str| Script::new(&format!("{LUA_PRELUDE}{body}"));
        Scripts {
            lock: script(LUA_LOCK),
            unlock: script(LUA_UNLOCK),
            refresh: script(LUA_REFRESH),
            delete: script(LUA_DELETE),
        }
    }
}

struct Shared {
    conn: ConnectionManager,
    prefix: String,
    scripts: Scripts,
}

/// WebDAV lock spaces in Redis: one [`DavLockSystem`] per user, shared by every gateway
/// that uses the same Redis and key prefix. See the [module documentation](self).
#[derive(Clone)]
pub struct RedisLockSpaces {
    shared: Arc<Shared>,
}

impl fmt::Debug for RedisLockSpaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLockSpaces")
            .field("prefix", &self.shared.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLockSpaces {
    /// Lock spaces in the Redis at `url`, keys starting with `prefix` (for example
    /// `filestore:`, giving `filestore:davlocks:<user>`).
    ///
    /// The connection is made lazily, so the server starts while Redis is down; until it
    /// is back, lock operations are refused. Must be called within a Tokio runtime.
    pub fn new(url: &str, prefix: &str) -> Result<Self, RedisLocksError> {
        let client = redis::Client::open(url).map_err(RedisLocksError::Url)?;
        // Same bounds as the upload sessions: a request waits at most a few seconds for
        // an unreachable Redis, then is refused instead of hanging the client.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(RedisLockSpaces {
            shared: Arc::new(Shared {
                conn,
                prefix: prefix.to_owned(),
                scripts: Scripts::new(),
            }),
        })
    }

    /// The Redis key holding the locks of `user_key`.
    pub fn redis_key(&self, user_key: &str) -> String {
        format!("{}davlocks:{user_key}", self.shared.prefix)
    }
}

impl LockSpaces for RedisLockSpaces {
    fn for_user(&self, user_key: &str) -> Box<dyn DavLockSystem> {
        Box::new(RedisLs {
            shared: Arc::clone(&self.shared),
            key: self.redis_key(user_key),
        })
    }
}

/// The lock system of one user: a handle on that user's hash.
#[derive(Clone)]
struct RedisLs {
    shared: Arc<Shared>,
    key: String,
}

impl fmt::Debug for RedisLs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLs")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// What a record keeps besides the fields the scripts need.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    /// The locked path with its URL prefix, percent-encoded (`/dav/a%20b.txt`).
    path: String,
    /// The URL prefix, not encoded (`/dav`), so the path is rebuilt as dav-server made it.
    prefix: String,
    principal: Option<String>,
    /// The `<D:owner>` element the client sent, as XML.
    owner: Option<String>,
}

impl Payload {
    fn new(path: &DavPath, principal: Option<&str>, owner: Option<&Element>) -> Self {
        let owner = owner.and_then(|o| {
            let mut xml = Vec::new();
            match o.write(&mut xml).map(|()| String::from_utf8(xml)) {
                Ok(Ok(xml)) => Some(xml),
                // Cannot happen for an element dav-server parsed; losing the owner only
                // changes what lock discovery shows, so the lock is still granted.
                other => {
                    tracing::warn!(
                        ?other,
                        "cannot serialize a WebDAV lock owner; storing the lock without it"
                    );
                    None
                }
            }
        });
        Payload {
            path: path.with_prefix().as_url_string(),
            prefix: path.prefix().to_owned(),
            principal: principal.map(str::to_owned),
            owner,
        }
    }

    fn dav_path(&self) -> Option<DavPath> {
        let mut path = DavPath::new(&self.path).ok()?;
        if !self.prefix.is_empty() {
            path.set_prefix(&self.prefix).ok()?;
        }
        Some(path)
    }
}

/// A lock as stored, with the fields the conflict rules need parsed.
#[derive(Debug)]
struct Record {
    token: String,
    expires_ms: u64,
    timeout_ms: u64,
    seq: u64,
    shared: bool,
    deep: bool,
    key: String,
    payload: String,
}

impl Record {
    fn parse(token: String, value: &str) -> Result<Record, RedisLocksError> {
        let malformed = |why| RedisLocksError::Malformed {
            token: token.clone(),
            why,
        };
        let mut it = value.splitn(8, ' ');
        if it.next() != Some("v1") {
            return Err(malformed("unknown record version"));
        }
        let mut num = || {
            it.next()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| malformed("bad number"))
        };
        let (expires_ms, timeout_ms, seq) = (num()?, num()?, num()?);
        let mut flag = || match it.next() {
            Some("0") => Ok(false),
            Some("1") => Ok(true),
            _ => Err(malformed("bad flag")),
        };
        let (shared, deep) = (flag()?, flag()?);
        let (Some(key), Some(payload)) = (it.next(), it.next()) else {
            return Err(malformed("truncated"));
        };
        Ok(Record {
            expires_ms,
            timeout_ms,
            seq,
            shared,
            deep,
            key: key.to_owned(),
            payload: payload.to_owned(),
            token,
        })
    }

    /// Segments in the path key: the order in which `MemLs` walks locks along a path.
    fn depth(&self) -> usize {
        self.key.bytes().filter(|&b| b == b'/').count()
    }

    fn payload(&self) -> Option<Payload> {
        match serde_json::from_str(&self.payload) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(token = %self.token, error = %e, "unreadable WebDAV lock payload");
                None
            }
        }
    }

    /// The lock for dav-server. `fallback` stands in for a path that does not parse.
    fn to_dav_lock(&self, clock: &Clock, fallback: &DavPath) -> DavLock {
        let payload = self.payload();
        let path = payload
            .as_ref()
            .and_then(Payload::dav_path)
            .unwrap_or_else(|| fallback.clone());
        let (principal, owner) = match payload {
            Some(p) => (p.principal, p.owner),
            None => (None, None),
        };
        let owner = owner.and_then(|xml| match Element::parse(xml.as_bytes()) {
            Ok(e) => Some(Box::new(e)),
            Err(e) => {
                tracing::warn!(token = %self.token, error = %e, "unreadable WebDAV lock owner");
                None
            }
        });
        DavLock {
            token: self.token.clone(),
            path: Box::new(path),
            principal,
            owner,
            timeout_at: Some(clock.local_time(self.expires_ms)),
            timeout: Some(Duration::from_millis(self.timeout_ms)),
            shared: self.shared,
            deep: self.deep,
        }
    }
}

/// The Redis clock at one instant, with the local time at the same instant: expiries are
/// in the Redis clock, dav-server wants local `SystemTime`s.
struct Clock {
    server_ms: u64,
    local: SystemTime,
}

impl Clock {
    fn local_time(&self, server_ms: u64) -> SystemTime {
        self.local + Duration::from_millis(server_ms.saturating_sub(self.server_ms))
    }
}

/// Parses `[token, record, token, record, ...]` as a script or HGETALL returns it, drops
/// expired locks, and sorts the rest as `MemLs` walks them: by depth, then by creation.
fn records(flat: Vec<String>, now_ms: u64) -> Result<Vec<Record>, RedisLocksError> {
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(token), Some(value)) = (it.next(), it.next()) {
        let r = Record::parse(token, &value)?;
        if r.expires_ms > now_ms {
            out.push(r);
        }
    }
    out.sort_by(|a, b| (a.depth(), &a.key, a.seq).cmp(&(b.depth(), &b.key, b.seq)));
    Ok(out)
}

/// The path key of a path (see the module documentation): the URL prefix is not part of
/// it, `""` is the root, and `/a/` and `/a` are the same key.
fn path_key(path: &DavPath) -> String {
    let mut key = String::new();
    for seg in path.as_bytes().split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        key.push('/');
        key.extend(percent_encode(seg, NON_ALPHANUMERIC));
    }
    key
}

/// Whether path key `a` is `b` or an ancestor of `b`.
fn covers(a: &str, b: &str) -> bool {
    b.len() >= a.len() && b.starts_with(a) && (b.len() == a.len() || b.as_bytes()[a.len()] == b'/')
}

/// Who asks: the principal of the request and the lock tokens it submitted.
struct Asker<'a> {
    principal: Option<&'a str>,
    ignore_principal: bool,
    tokens: &'a [String],
}

impl Asker<'_> {
    /// `MemLs`'s rule: the token was submitted, by the lock's principal unless ignored.
    fn holds(&self, r: &Record) -> bool {
        self.tokens.contains(&r.token)
            && (self.ignore_principal || r.payload().is_some_and(|p| p.principal.as_deref() == self.principal))
    }
}

/// The lock that stands in the way of `asker` at `key`, chosen as dav-server's `MemLs`
/// chooses it (`check_locks_to_path`, then `check_locks_from_path` when `deep`), over
/// `records` sorted by [`records`]. `shared_ok` is set when asking for a shared lock.
fn find_conflict<'r>(
    records: &'r [Record],
    key: &str,
    asker: &Asker<'_>,
    deep: bool,
    shared_ok: bool,
) -> Option<&'r Record> {
    // Locks on the path and deep locks on its ancestors, root first. Holding any of
    // them lifts the shared ones, never an exclusive one held by someone else.
    let mut held = false;
    let mut first_shared = None;
    for r in records
        .iter()
        .filter(|r| covers(&r.key, key) && (r.deep || r.key == key))
    {
        if asker.holds(r) {
            held = true;
        } else if !r.shared {
            return Some(r);
        } else if !shared_ok {
            first_shared.get_or_insert(r);
        }
    }
    if !held && first_shared.is_some() {
        return first_shared;
    }
    // A deep request also needs every lock below the path (and on it) held or shared.
    if deep {
        return records
            .iter()
            .filter(|r| covers(key, &r.key))
            .find(|r| (!r.shared || !shared_ok) && !asker.holds(r));
    }
    None
}

/// The lock reported when the store fails: the request is refused as if `path` were
/// locked by someone else.
fn unavailable_lock(path: &DavPath) -> DavLock {
    DavLock {
        token: UNAVAILABLE_TOKEN.to_owned(),
        path: Box::new(path.clone()),
        principal: None,
        owner: None,
        timeout_at: None,
        timeout: None,
        shared: false,
        deep: false,
    }
}

/// `urn:uuid:` and a random (version 4) UUID, the token format of dav-server's `MemLs`.
fn new_token() -> Result<String, RedisLocksError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(RedisLocksError::Random)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// The timeout granted for a requested one, as `ExpiringLs` grants it (at most
/// [`MAX_LOCK_TIMEOUT`], also for `Infinite`), and at least [`MIN_LOCK_TIMEOUT`].
fn granted(timeout: Option<Duration>) -> Duration {
    timeout
        .map_or(MAX_LOCK_TIMEOUT, |t| t.min(MAX_LOCK_TIMEOUT))
        .max(MIN_LOCK_TIMEOUT)
}

fn flag(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

impl RedisLs {
    fn refuse(&self, op: &'static str, e: &RedisLocksError) {
        tracing::warn!(key = %self.key, op, error = %e, "WebDAV lock store failed; refusing the request");
    }

    fn clock(server_ms: u64) -> Clock {
        Clock {
            server_ms,
            local: SystemTime::now(),
        }
    }

    /// The user's live locks, sorted, in one round trip.
    async fn read(&self) -> Result<(Clock, Vec<Record>), RedisLocksError> {
        let mut conn = self.shared.conn.clone();
        let ((secs, micros), flat): ((u64, u64), Vec<String>) = redis::pipe()
            .cmd("TIME")
            .cmd("HGETALL")
            .arg(&self.key)
            .query_async(&mut conn)
            .await?;
        let now_ms = secs * 1000 + micros / 1000;
        Ok((Self::clock(now_ms), records(flat, now_ms)?))
    }

    async fn try_lock(
        &self,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> Result<Result<DavLock, DavLock>, RedisLocksError> {
        let token = new_token()?;
        let key = path_key(path);
        let timeout = granted(timeout);
        let payload = serde_json::to_string(&Payload::new(path, principal, owner)).map_err(RedisLocksError::Encode)?;
        let mut conn = self.shared.conn.clone();
        let (won, now_ms, flat): (i64, u64, Vec<String>) = self
            .shared
            .scripts
            .lock
            .key(&self.key)
            .arg(&token)
            .arg(&key)
            .arg(flag(shared))
            .arg(flag(deep))
            .arg(timeout.as_millis() as u64)
            .arg(payload)
            .invoke_async(&mut conn)
            .await?;
        let clock = Self::clock(now_ms);
        if won == 1 {
            return Ok(Ok(DavLock {
                token,
                path: Box::new(path.clone()),
                principal: principal.map(str::to_owned),
                owner: owner.map(|o| Box::new(o.clone())),
                timeout_at: Some(clock.local + timeout),
                timeout: Some(timeout),
                shared,
                deep,
            }));
        }
        // The script returned only the locks in the way; pick the one MemLs would name.
        let blocking = records(flat, now_ms)?;
        let nobody = Asker {
            principal: None,
            ignore_principal: true,
            tokens: &[],
        };
        let lock = find_conflict(&blocking, &key, &nobody, deep, shared)
            .or(blocking.first())
            .map_or_else(|| unavailable_lock(path), |r| r.to_dav_lock(&clock, path));
        Ok(Err(lock))
    }

    async fn try_unlock(&self, path: &DavPath, token: &str) -> Result<bool, RedisLocksError> {
        let mut conn = self.shared.conn.clone();
        let removed: i64 = self
            .shared
            .scripts
            .unlock
            .key(&self.key)
            .arg(token)
            .arg(path_key(path))
            .invoke_async(&mut conn)
            .await?;
        Ok(removed == 1)
    }

    async fn try_refresh(
        &self,
        path: &DavPath,
        token: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<DavLock>, RedisLocksError> {
        let mut conn = self.shared.conn.clone();
        let (found, now_ms, flat): (i64, u64, Vec<String>) = self
            .shared
            .scripts
            .refresh
            .key(&self.key)
            .arg(token)
            .arg(path_key(path))
            .arg(granted(timeout).as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        if found != 1 {
            return Ok(None);
        }
        let clock = Self::clock(now_ms);
        Ok(records(flat, now_ms)?.first().map(|r| r.to_dav_lock(&clock, path)))
    }

    async fn try_check(
        &self,
        path: &DavPath,
        asker: &Asker<'_>,
        deep: bool,
    ) -> Result<Result<(), DavLock>, RedisLocksError> {
        let (clock, locks) = self.read().await?;
        Ok(match find_conflict(&locks, &path_key(path), asker, deep, false) {
            Some(r) => Err(r.to_dav_lock(&clock, path)),
            None => Ok(()),
        })
    }

    async fn try_discover(&self, path: &DavPath) -> Result<Vec<DavLock>, RedisLocksError> {
        let (clock, locks) = self.read().await?;
        let key = path_key(path);
        // Every lock on the path or an ancestor, deep or not: what MemLs lists (so a
        // depth-0 lock on a collection also shows in its members' lock discovery).
        Ok(locks
            .iter()
            .filter(|r| covers(&r.key, &key))
            .map(|r| r.to_dav_lock(&clock, path))
            .collect())
    }

    async fn try_delete(&self, path: &DavPath) -> Result<(), RedisLocksError> {
        let mut conn = self.shared.conn.clone();
        let _removed: i64 = self
            .shared
            .scripts
            .delete
            .key(&self.key)
            .arg(path_key(path))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}

impl DavLockSystem for RedisLs {
    fn lock(
        &self,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> LsFuture<'_, Result<DavLock, DavLock>> {
        let path = path.clone();
        let principal = principal.map(str::to_owned);
        let owner = owner.cloned();
        async move {
            self.try_lock(&path, principal.as_deref(), owner.as_ref(), timeout, shared, deep)
                .await
                .unwrap_or_else(|e| {
                    self.refuse("lock", &e);
                    Err(unavailable_lock(&path))
                })
        }
        .boxed()
    }

    fn unlock(&self, path: &DavPath, token: &str) -> LsFuture<'_, Result<(), ()>> {
        let path = path.clone();
        let token = token.to_owned();
        async move {
            match self.try_unlock(&path, &token).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(()),
                Err(e) => {
                    self.refuse("unlock", &e);
                    Err(())
                }
            }
        }
        .boxed()
    }

    fn refresh(&self, path: &DavPath, token: &str, timeout: Option<Duration>) -> LsFuture<'_, Result<DavLock, ()>> {
        let path = path.clone();
        let token = token.to_owned();
        async move {
            match self.try_refresh(&path, &token, timeout).await {
                Ok(lock) => lock.ok_or(()),
                Err(e) => {
                    self.refuse("refresh", &e);
                    Err(())
                }
            }
        }
        .boxed()
    }

    fn check(
        &self,
        path: &DavPath,
        principal: Option<&str>,
        ignore_principal: bool,
        deep: bool,
        submitted_tokens: &[String],
    ) -> LsFuture<'_, Result<(), DavLock>> {
        let path = path.clone();
        let principal = principal.map(str::to_owned);
        let tokens = submitted_tokens.to_vec();
        async move {
            let asker = Asker {
                principal: principal.as_deref(),
                ignore_principal,
                tokens: &tokens,
            };
            self.try_check(&path, &asker, deep).await.unwrap_or_else(|e| {
                self.refuse("check", &e);
                Err(unavailable_lock(&path))
            })
        }
        .boxed()
    }

    fn discover(&self, path: &DavPath) -> LsFuture<'_, Vec<DavLock>> {
        let path = path.clone();
        async move {
            // Only feeds lock discovery (PROPFIND): an empty list there blocks nothing.
            self.try_discover(&path).await.unwrap_or_else(|e| {
                self.refuse("discover", &e);
                Vec::new()
            })
        }
        .boxed()
    }

    fn delete(&self, path: &DavPath) -> LsFuture<'_, Result<(), ()>> {
        let path = path.clone();
        async move {
            // dav-server ignores the result (the resource is already gone). Locks left
            // behind by a failure run out with their timeout (at most an hour).
            self.try_delete(&path).await.map_err(|e| {
                self.refuse("delete", &e);
            })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> DavPath {
        DavPath::new(s).expect("test path")
    }

    #[test]
    fn path_keys_ignore_trailing_slashes_and_escape_segments() {
        assert_eq!(path_key(&p("/")), "");
        assert_eq!(path_key(&p("/a/")), "/a");
        assert_eq!(path_key(&p("/a")), "/a");
        assert_eq!(path_key(&p("/a%20b/c")), "/a%20b/c");
        let mut prefixed = p("/dav/x/");
        prefixed.set_prefix("/dav").expect("prefix");
        assert_eq!(path_key(&prefixed), "/x");
    }

    #[test]
    fn covers_is_ancestor_or_self_by_segment() {
        assert!(covers("", ""));
        assert!(covers("", "/a"));
        assert!(covers("/a", "/a"));
        assert!(covers("/a", "/a/b"));
        assert!(!covers("/a", "/ab"));
        assert!(!covers("/a/b", "/a"));
    }

    #[test]
    fn records_parse_and_reject_garbage() {
        let r = Record::parse("t".into(), "v1 10 5 3 1 0  {\"x\":1}").expect("root record");
        assert_eq!(
            (r.expires_ms, r.timeout_ms, r.seq, r.shared, r.deep),
            (10, 5, 3, true, false)
        );
        assert_eq!(r.key, "");
        assert_eq!(r.payload, "{\"x\":1}");
        assert!(Record::parse("t".into(), "v2 1 1 1 0 0 /a {}").is_err());
        assert!(Record::parse("t".into(), "v1 1 1 1 2 0 /a {}").is_err());
        assert!(Record::parse("t".into(), "v1 1 1").is_err());
    }

    #[test]
    fn timeouts_are_capped_like_expiring_ls() {
        assert_eq!(granted(None), MAX_LOCK_TIMEOUT);
        assert_eq!(granted(Some(Duration::from_secs(86400))), MAX_LOCK_TIMEOUT);
        assert_eq!(granted(Some(Duration::from_secs(60))), Duration::from_secs(60));
        assert_eq!(granted(Some(Duration::ZERO)), MIN_LOCK_TIMEOUT);
    }

    #[test]
    fn tokens_look_like_memls_tokens() {
        let t = new_token().expect("token");
        assert!(t.starts_with("urn:uuid:"));
        assert_eq!(t.len(), "urn:uuid:".len() + 36);
        assert_ne!(t, new_token().expect("token"));
    }
}
