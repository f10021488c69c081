//! Instant upload ("秒传"): linking content the server already has, without sending it.
//!
//! Knowing a SHA-1 must not be a key to someone else's file (SEED-API.md 8.1.4). A user
//! who already owns the content links it at once. Anyone else gets a challenge: a nonce
//! and a byte range the server picks at random, and must answer with
//! `SHA-1(nonce || content[offset .. offset + length])`, which takes the bytes themselves.
//! A challenge is issued whether or not the content exists, so the answer reveals nothing
//! about other users' files; it is stateless (an HMAC binds it to the user, the hash, the
//! size, the range and an expiry) and valid for a few minutes.

use std::sync::Arc;

use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use sha1::Digest;
use sha2::Sha256;

use crate::blob::is_sha1_hex;
use crate::drive::{Drive, DriveError, UploadTarget};
use crate::meta::{now_ms, Entry, MetaError, User};

/// Longest challenge range: enough that guessing is hopeless, small enough that the check
/// costs the same for any file size.
const MAX_RANGE: u64 = 64 * 1024;
const CHALLENGE_TTL_MS: i64 = 5 * 60 * 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub nonce: String,
    pub offset: u64,
    pub length: u64,
    pub expires: i64,
}

#[derive(Debug)]
pub enum Outcome {
    Linked(Entry),
    /// Prove possession (or upload normally).
    Challenge(Challenge),
    /// The proof was wrong, expired, or the content is not here: upload normally.
    Refused,
}

pub struct Instant {
    drive: Arc<Drive>,
    key: Vec<u8>,
}

impl Instant {
    pub fn new(drive: Arc<Drive>, key: Vec<u8>) -> Self {
        Instant { drive, key }
    }

    fn mac(&self, msg: &str) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(b"instant-upload\0");
        m.update(msg.as_bytes());
        m
    }

    /// Links `sha1` as `target` if the user owns it or `proof` answers a challenge;
    /// otherwise returns a challenge. `proof` is `(nonce, hex SHA-1)`.
    pub async fn try_link(
        &self,
        user: &User,
        sha1: &str,
        size: i64,
        target: UploadTarget,
        proof: Option<(&str, &str)>,
    ) -> Result<Outcome, DriveError> {
        let sha1 = sha1.to_ascii_lowercase();
        if !is_sha1_hex(&sha1) || size < 0 {
            return Ok(Outcome::Refused);
        }
        let meta = self.drive.meta();
        let content = meta.content(&sha1).await?.filter(|c| c.size == size);
        if let Some(c) = &content {
            if meta.newest_with_content(user.id, &sha1).await?.is_some() {
                return Ok(Outcome::Linked(self.link(user, target, c).await?));
            }
        }
        let Some((nonce, answer)) = proof else {
            return Ok(Outcome::Challenge(self.challenge(user, &sha1, size)));
        };
        let Some((offset, length)) = self.check_nonce(user, &sha1, size, nonce) else {
            return Ok(Outcome::Refused);
        };
        let Some(c) = content else {
            return Ok(Outcome::Refused);
        };
        let mut range = self.drive.read(&c, offset, length).await?;
        let mut h = sha1::Sha1::new();
        h.update(nonce.as_bytes());
        while let Some(chunk) = range.next().await {
            h.update(&chunk.map_err(|e| DriveError::Blob(e.into()))?);
        }
        let expected = hex::encode(h.finalize());
        // Constant-time comparison: the proof is a secret-derived value.
        let ok = expected.len() == answer.len()
            && expected
                .bytes()
                .zip(answer.to_ascii_lowercase().bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !ok {
            return Ok(Outcome::Refused);
        }
        Ok(Outcome::Linked(self.link(user, target, &c).await?))
    }

    async fn link(&self, user: &User, target: UploadTarget, c: &crate::meta::Content) -> Result<Entry, DriveError> {
        match self.drive.link(user, target, c).await {
            // The bytes went away between the lookup and the link (collected): upload.
            Err(DriveError::Meta(MetaError::Io(_))) => Err(DriveError::Meta(MetaError::NotFound)),
            other => other,
        }
    }

    fn challenge(&self, user: &User, sha1: &str, size: i64) -> Challenge {
        let size = size as u64;
        let length = size.min(MAX_RANGE);
        let mut r = [0u8; 8];
        getrandom::fill(&mut r).expect("OS random number generator");
        let offset = if size > length {
            u64::from_le_bytes(r) % (size - length + 1)
        } else {
            0
        };
        let expires = now_ms() + CHALLENGE_TTL_MS;
        let salt = crate::util::random_hex(8);
        let body = format!("{expires}.{offset}.{length}.{salt}");
        let tag = hex::encode(
            self.mac(&format!("{}|{sha1}|{size}|{body}", user.id))
                .finalize()
                .into_bytes(),
        );
        Challenge {
            nonce: format!("{body}.{tag}"),
            offset,
            length,
            expires,
        }
    }

    /// The range a nonce of ours, issued to this user for this content, asks for.
    fn check_nonce(&self, user: &User, sha1: &str, size: i64, nonce: &str) -> Option<(u64, u64)> {
        let (body, tag) = nonce.rsplit_once('.')?;
        let mut f = body.split('.');
        let expires: i64 = f.next()?.parse().ok()?;
        let offset: u64 = f.next()?.parse().ok()?;
        let length: u64 = f.next()?.parse().ok()?;
        f.next()?;
        if f.next().is_some() || expires < now_ms() || offset + length > size as u64 {
            return None;
        }
        self.mac(&format!("{}|{sha1}|{size}|{body}", user.id))
            .verify_slice(&hex::decode(tag).ok()?)
            .ok()?;
        Some((offset, length))
    }
}

/// What a client computes to answer a challenge (used by the command-line client).
pub fn answer(nonce: &str, range: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(nonce.as_bytes());
    h.update(range);
    hex::encode(h.finalize())
}
