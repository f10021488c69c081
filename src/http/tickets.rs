//! Short-lived signed download links. The seed put the user's token in the URLs that
//! `/file/downloadurl` handed out, where it leaks into logs, history and Referer headers; a
//! ticket names one entry of one user, expires in minutes, and grants nothing else.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::meta::{now_ms, MetaError, MetaStore};

/// The HMAC key, shared by every gateway through the settings table.
#[derive(Clone)]
pub struct TicketKey(std::sync::Arc<Vec<u8>>);

/// What a valid ticket grants: read access to one entry of one user.
#[derive(Debug, PartialEq, Eq)]
pub struct Grant {
    pub user: i64,
    pub entry: i64,
}

impl TicketKey {
    pub async fn load(meta: &MetaStore) -> Result<TicketKey, MetaError> {
        let hex_key = meta
            .setting_or_init("download_ticket_key", &crate::util::random_hex(32))
            .await?;
        Ok(TicketKey(std::sync::Arc::new(hex::decode(hex_key).unwrap_or_default())))
    }

    fn mac(&self, msg: &str) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        m.update(msg.as_bytes());
        m
    }

    /// `user.entry.expiry.mac`, valid for `ttl_secs`.
    pub fn issue(&self, user: i64, entry: i64, ttl_secs: u64) -> String {
        self.issue_until(user, entry, now_ms() + ttl_secs as i64 * 1000)
    }

    fn issue_until(&self, user: i64, entry: i64, expiry_ms: i64) -> String {
        let msg = format!("{user}.{entry}.{expiry_ms}");
        let tag = hex::encode(self.mac(&msg).finalize().into_bytes());
        format!("{msg}.{tag}")
    }

    /// `expiry.mac`: lets `user` keep reading content `sha1` for `ttl_secs` even after
    /// the entry it was read through is gone (a FUSE mount reading a file that was
    /// unlinked or replaced while open). It names content the user has seen, not an
    /// entry, and is only accepted together with that user's bearer token.
    pub fn issue_content(&self, user: i64, sha1: &str, ttl_secs: u64) -> String {
        let expiry = now_ms() + ttl_secs as i64 * 1000;
        let tag = hex::encode(
            self.mac(&format!("content.{user}.{sha1}.{expiry}"))
                .finalize()
                .into_bytes(),
        );
        format!("{expiry}.{tag}")
    }

    /// Whether `token` is an authentic, unexpired [`TicketKey::issue_content`] for
    /// `user` and `sha1`.
    pub fn verify_content(&self, token: &str, user: i64, sha1: &str) -> bool {
        let Some((expiry, tag)) = token.split_once('.') else {
            return false;
        };
        let Ok(exp) = expiry.parse::<i64>() else { return false };
        let Ok(tag) = hex::decode(tag) else { return false };
        exp >= now_ms()
            && self
                .mac(&format!("content.{user}.{sha1}.{exp}"))
                .verify_slice(&tag)
                .is_ok()
    }

    /// The grant of a well-formed, authentic, unexpired ticket.
    pub fn verify(&self, ticket: &str) -> Option<Grant> {
        let (msg, tag) = ticket.rsplit_once('.')?;
        let mut parts = msg.split('.');
        let user = parts.next()?.parse().ok()?;
        let entry = parts.next()?.parse().ok()?;
        let expiry: i64 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || expiry < now_ms() {
            return None;
        }
        // verify_slice compares in constant time.
        self.mac(msg).verify_slice(&hex::decode(tag).ok()?).ok()?;
        Some(Grant { user, entry })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets() {
        let k = TicketKey(std::sync::Arc::new(vec![7; 32]));
        let t = k.issue(3, 9, 60);
        assert_eq!(k.verify(&t), Some(Grant { user: 3, entry: 9 }));
        let forged = t.replacen("3.9", "4.9", 1);
        assert_eq!(k.verify(&forged), None);
        assert_eq!(k.verify("3.9.99999999999999.00"), None);
        let other = TicketKey(std::sync::Arc::new(vec![8; 32]));
        assert_eq!(other.verify(&t), None);
        let expired = k.issue_until(3, 9, now_ms() - 1);
        assert_eq!(k.verify(&expired), None);
        let c = k.issue_content(3, "abc", 60);
        assert!(k.verify_content(&c, 3, "abc"));
        assert!(!k.verify_content(&c, 4, "abc"));
        assert!(!k.verify_content(&c, 3, "abd"));
        assert!(!other.verify_content(&c, 3, "abc"));
        assert_eq!(k.verify(&c), None, "a content token is not an entry ticket");
        assert!(!k.verify_content(&t, 3, "abc"));
    }
}
