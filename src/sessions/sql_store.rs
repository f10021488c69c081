//! Sessions in the metadata database (the embedded default): a restart loses nothing.

use super::{SessionError, SessionStore, UploadSession};
use crate::meta::{now_ms, MetaStore};

pub struct SqlSessions {
    meta: MetaStore,
}

impl SqlSessions {
    pub fn new(meta: MetaStore) -> Self {
        SqlSessions { meta }
    }
}

#[async_trait::async_trait]
impl SessionStore for SqlSessions {
    async fn create(&self, s: &UploadSession) -> Result<(), SessionError> {
        Ok(self.meta.session_create(s).await?)
    }

    async fn get(&self, id: &str) -> Result<Option<UploadSession>, SessionError> {
        Ok(self.meta.session_get(id, now_ms()).await?)
    }

    async fn find(&self, owner: i64, sha1: &str, size: i64) -> Result<Option<UploadSession>, SessionError> {
        Ok(self.meta.session_find(owner, sha1, size, now_ms()).await?)
    }

    async fn record_part(&self, id: &str, index: i64, ttl_ms: i64) -> Result<bool, SessionError> {
        Ok(self.meta.session_record_part(id, index, now_ms(), ttl_ms).await?)
    }

    async fn parts(&self, id: &str) -> Result<Vec<i64>, SessionError> {
        Ok(self.meta.session_parts(id).await?)
    }

    async fn delete(&self, id: &str) -> Result<(), SessionError> {
        Ok(self.meta.session_delete(id).await?)
    }

    async fn count_open(&self, now: i64) -> Result<u64, SessionError> {
        Ok(self.meta.session_count(now).await?)
    }

    async fn ping(&self) -> Result<(), SessionError> {
        Ok(self.meta.ping().await?)
    }
}
