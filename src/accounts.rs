//! Accounts: sign-up, sign-in with argon2id, bearer tokens stored hashed with an expiry.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::config::AuthConfig;
use crate::meta::{now_ms, MetaError, MetaStore, User};
use crate::ratelimit::RateLimiter;
use crate::util::{random_hex, sha256_hex};

/// Bytes of randomness in a token (160 bits; 40 hex characters, the seed's token length).
const TOKEN_BYTES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("user names are 3 to 64 characters: letters, digits, `.`, `_`, `-` and `@`")]
    InvalidUsername,
    #[error("passwords need at least {0} characters")]
    WeakPassword(usize),
    #[error("that user name is taken")]
    UserExists,
    #[error("sign-up is disabled on this server")]
    SignupDisabled,
    #[error("wrong user name or password")]
    InvalidCredentials,
    #[error("this account is disabled")]
    Disabled,
    #[error("too many sign-in attempts; retry in {} s", .0.as_secs().max(1))]
    RateLimited(Duration),
    #[error("missing, invalid or expired token")]
    InvalidToken,
    #[error("password hashing: {0}")]
    Hash(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// A signed-in session: the token is shown once, only its hash is stored.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub expires_at: i64,
    pub user: User,
}

pub struct Accounts {
    meta: MetaStore,
    cfg: AuthConfig,
    per_user: RateLimiter,
    per_ip: RateLimiter,
}

impl Accounts {
    pub fn new(meta: MetaStore, cfg: AuthConfig) -> Arc<Self> {
        Arc::new(Accounts {
            per_user: RateLimiter::new(cfg.signin_burst_per_user, cfg.signin_per_minute_per_user),
            per_ip: RateLimiter::new(cfg.signin_burst_per_ip, cfg.signin_per_minute_per_ip),
            meta,
            cfg,
        })
    }

    pub fn meta(&self) -> &MetaStore {
        &self.meta
    }

    /// Self-service sign-up, if the server allows it.
    pub async fn signup(&self, name: &str, password: &str) -> Result<User, AuthError> {
        if !self.cfg.signup {
            return Err(AuthError::SignupDisabled);
        }
        self.create_user(name, password, false).await
    }

    /// Creates an account (the admin command bypasses the sign-up switch).
    pub async fn create_user(&self, name: &str, password: &str, is_admin: bool) -> Result<User, AuthError> {
        validate_username(name)?;
        self.check_password(password)?;
        let hash = hash_password(password.to_string()).await?;
        match self.meta.create_user(name, &hash, is_admin).await {
            Err(MetaError::AlreadyExists) => Err(AuthError::UserExists),
            other => Ok(other?),
        }
    }

    pub async fn set_password(&self, name: &str, password: &str) -> Result<(), AuthError> {
        self.check_password(password)?;
        let hash = hash_password(password.to_string()).await?;
        Ok(self.meta.set_password_hash(name, &hash).await?)
    }

    fn check_password(&self, password: &str) -> Result<(), AuthError> {
        if password.chars().count() < self.cfg.min_password_len {
            return Err(AuthError::WeakPassword(self.cfg.min_password_len));
        }
        Ok(())
    }

    /// Verifies a password and issues a token. Attempts are rate-limited per user name and
    /// per client address; a success gives its tokens back, so only failures count.
    pub async fn signin(&self, name: &str, password: &str, client: IpAddr) -> Result<Session, AuthError> {
        let user = self.check_credentials(name, password, client).await?;
        let token = random_hex(TOKEN_BYTES);
        let expires_at = now_ms() + (self.cfg.token_ttl_secs as i64) * 1000;
        self.meta
            .insert_token(&sha256_hex(token.as_bytes()), user.id, expires_at)
            .await?;
        Ok(Session {
            token,
            expires_at,
            user,
        })
    }

    /// Verifies a user name and password (rate-limited like sign-in) without issuing a
    /// token: what HTTP Basic authentication needs.
    pub async fn check_credentials(&self, name: &str, password: &str, client: IpAddr) -> Result<User, AuthError> {
        let ip_key = client.to_string();
        let user_key = name.to_lowercase();
        self.per_ip.take(&ip_key).map_err(AuthError::RateLimited)?;
        if let Err(wait) = self.per_user.take(&user_key) {
            self.per_ip.give_back(&ip_key);
            return Err(AuthError::RateLimited(wait));
        }
        let result = self.verify(name, password).await;
        if result.is_ok() {
            self.per_ip.give_back(&ip_key);
            self.per_user.give_back(&user_key);
        }
        result
    }

    async fn verify(&self, name: &str, password: &str) -> Result<User, AuthError> {
        let user = self.meta.user_by_name(name).await?;
        // An unknown user costs the same argon2 run as a known one, so response times do
        // not reveal which names exist.
        let hash = match &user {
            Some(u) => u.password_hash.clone(),
            None => dummy_hash().to_string(),
        };
        let ok = verify_password(password.to_string(), hash).await?;
        match user {
            Some(u) if ok && u.disabled => Err(AuthError::Disabled),
            Some(u) if ok => Ok(u),
            _ => Err(AuthError::InvalidCredentials),
        }
    }

    /// The user a bearer token belongs to, if it is live and the account enabled.
    pub async fn authenticate(&self, token: &str) -> Result<User, AuthError> {
        if token.is_empty() || token.len() > 128 {
            return Err(AuthError::InvalidToken);
        }
        self.meta
            .user_by_token(&sha256_hex(token.as_bytes()), now_ms())
            .await?
            .ok_or(AuthError::InvalidToken)
    }

    /// Ends a session; the token stops working at once.
    pub async fn signout(&self, token: &str) -> Result<(), AuthError> {
        self.meta.delete_token(&sha256_hex(token.as_bytes())).await?;
        Ok(())
    }
}

/// 3 to 64 characters from a set that is safe in URLs, HTTP Basic credentials and logs.
pub fn validate_username(name: &str) -> Result<(), AuthError> {
    let ok_len = (3..=64).contains(&name.chars().count());
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(AuthError::InvalidUsername)
    }
}

/// Password hashes computed at once: each takes 19 MiB and a core for tens of
/// milliseconds, so a burst of sign-ins queues here instead of exhausting memory and CPU.
fn argon2_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())))
}

async fn hash_password(password: String) -> Result<String, AuthError> {
    let _slot = argon2_slots()
        .acquire()
        .await
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AuthError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| AuthError::Hash(e.to_string()))?
}

async fn verify_password(password: String, hash: String) -> Result<bool, AuthError> {
    let _slot = argon2_slots()
        .acquire()
        .await
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(|e| AuthError::Hash(e.to_string()))?;
        Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .map_err(|e| AuthError::Hash(e.to_string()))?
}

/// An argon2id hash of a random password, computed once, to verify against for unknown users.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(random_hex(16).as_bytes(), &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(validate_username("alice").is_ok());
        assert!(validate_username("a.b-c_d@e").is_ok());
        assert!(validate_username("ab").is_err());
        assert!(validate_username("has space").is_err());
        assert!(validate_username("colon:name").is_err());
        assert!(validate_username(&"x".repeat(65)).is_err());
    }

    #[tokio::test]
    async fn hashes_are_argon2id_and_salted() {
        let a = hash_password("correct horse".into()).await.unwrap();
        let b = hash_password("correct horse".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify_password("correct horse".into(), a.clone()).await.unwrap());
        assert!(!verify_password("wrong".into(), a).await.unwrap());
    }
}
