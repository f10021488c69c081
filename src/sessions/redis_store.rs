//! Sessions in Redis: one hash per session, `<prefix>MP_<id>`, with the seed's field names
//! (`filehash`, `filesize`, `chunkcount`, `chkidx_<n>`) plus ours (`owner`, `chunksize`,
//! `target`, `created`), and an index key `<prefix>MPIDX_<owner>_<sha1>_<size>` for resuming.
//! Both carry a TTL that every recorded chunk refreshes, so abandoned sessions expire on
//! their own; several gateways share them through Redis.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

use super::{SessionError, SessionStore, UploadSession};
use crate::meta::now_ms;

pub struct RedisSessions {
    conn: ConnectionManager,
    prefix: String,
}

/// Records a chunk only if the session still exists, and refreshes both TTLs, atomically.
const RECORD_PART: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], '1')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'expires', ARGV[3])
local idx = redis.call('HGET', KEYS[1], 'index')
if idx then redis.call('PEXPIRE', idx, ARGV[2]) end
return 1
"#;

fn unavailable(e: redis::RedisError) -> SessionError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        SessionError::Unavailable(e.to_string())
    } else {
        SessionError::Other(e.to_string())
    }
}

impl RedisSessions {
    /// A lazily connected store: the server starts even while Redis is down, and requests
    /// that need it then fail fast with `Unavailable`.
    pub fn new(url: &str, prefix: &str) -> Result<Self, SessionError> {
        let client = redis::Client::open(url).map_err(|e| SessionError::Other(format!("redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(RedisSessions {
            conn,
            prefix: prefix.to_string(),
        })
    }

    fn key(&self, id: &str) -> String {
        format!("{}MP_{id}", self.prefix)
    }

    fn index_key(&self, owner: i64, sha1: &str, size: i64) -> String {
        format!("{}MPIDX_{owner}_{sha1}_{size}", self.prefix)
    }
}

fn parse(id: &str, h: &HashMap<String, String>) -> Option<UploadSession> {
    let num = |k: &str| h.get(k).and_then(|v| v.parse::<i64>().ok());
    Some(UploadSession {
        id: id.to_string(),
        owner: num("owner")?,
        sha1: h.get("filehash")?.clone(),
        size: num("filesize")?,
        chunk_size: num("chunksize")?,
        chunk_count: num("chunkcount")?,
        target: h.get("target").cloned().unwrap_or_default(),
        created_at: num("created").unwrap_or(0),
        expires_at: num("expires").unwrap_or(0),
    })
}

#[async_trait::async_trait]
impl SessionStore for RedisSessions {
    async fn create(&self, s: &UploadSession) -> Result<(), SessionError> {
        let key = self.key(&s.id);
        // A session whose SHA-1 is declared at completion is never resumed by content:
        // its index key is its own, so that nothing finds it and no other session's is
        // touched when it goes.
        let idx = match s.sha1.as_str() {
            "" => self.index_key(s.owner, &format!("undeclared-{}", s.id), s.size),
            h => self.index_key(s.owner, h, s.size),
        };
        let ttl = (s.expires_at - now_ms()).max(1000);
        let fields: Vec<(&str, String)> = vec![
            ("owner", s.owner.to_string()),
            ("filehash", s.sha1.clone()),
            ("filesize", s.size.to_string()),
            ("chunksize", s.chunk_size.to_string()),
            ("chunkcount", s.chunk_count.to_string()),
            ("target", s.target.clone()),
            ("created", s.created_at.to_string()),
            ("expires", s.expires_at.to_string()),
            ("index", idx.clone()),
        ];
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .hset_multiple(&key, &fields)
            .pexpire(&key, ttl)
            .set(&idx, &s.id)
            .pexpire(&idx, ttl)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn get(&self, id: &str) -> Result<Option<UploadSession>, SessionError> {
        let mut conn = self.conn.clone();
        let h: HashMap<String, String> = conn.hgetall(self.key(id)).await.map_err(unavailable)?;
        Ok(if h.is_empty() { None } else { parse(id, &h) })
    }

    async fn find(&self, owner: i64, sha1: &str, size: i64) -> Result<Option<UploadSession>, SessionError> {
        let mut conn = self.conn.clone();
        let id: Option<String> = conn.get(self.index_key(owner, sha1, size)).await.map_err(unavailable)?;
        match id {
            Some(id) => Ok(self.get(&id).await?.filter(|s| s.owner == owner)),
            None => Ok(None),
        }
    }

    async fn record_part(&self, id: &str, index: i64, ttl_ms: i64) -> Result<bool, SessionError> {
        let mut conn = self.conn.clone();
        let n: i64 = redis::Script::new(RECORD_PART)
            .key(self.key(id))
            .arg(format!("chkidx_{index}"))
            .arg(ttl_ms)
            .arg(now_ms() + ttl_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    async fn parts(&self, id: &str) -> Result<Vec<i64>, SessionError> {
        let mut conn = self.conn.clone();
        let fields: Vec<String> = conn.hkeys(self.key(id)).await.map_err(unavailable)?;
        let mut parts: Vec<i64> = fields
            .iter()
            .filter_map(|f| f.strip_prefix("chkidx_").and_then(|n| n.parse().ok()))
            .collect();
        parts.sort_unstable();
        Ok(parts)
    }

    async fn delete(&self, id: &str) -> Result<(), SessionError> {
        let mut conn = self.conn.clone();
        let key = self.key(id);
        let idx: Option<String> = conn.hget(&key, "index").await.map_err(unavailable)?;
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key);
        if let Some(idx) = idx {
            // Only drop the index if it still points at this session.
            let current: Option<String> = conn.get(&idx).await.map_err(unavailable)?;
            if current.as_deref() == Some(id) {
                pipe.del(&idx);
            }
        }
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }

    async fn count_open(&self, _now: i64) -> Result<u64, SessionError> {
        // SCAN walks the keyspace in steps; fine at scrape intervals.
        let mut conn = self.conn.clone();
        let pattern = format!("{}MP_*", self.prefix);
        let mut iter: redis::AsyncIter<String> = conn.scan_match(pattern).await.map_err(unavailable)?;
        let mut n = 0;
        while let Some(k) = iter.next_item().await {
            k.map_err(unavailable)?;
            n += 1;
        }
        Ok(n)
    }

    async fn ping(&self) -> Result<(), SessionError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
