//! Who may do what. Users come from an htpasswd file with bcrypt entries;
//! a request carries either HTTP basic credentials or a bearer token that
//! the registry's `/token` endpoint issued (the challenge flow Docker,
//! skopeo and oci-client follow). Users named pull-only may read but never
//! write.
//!
//! Tokens are `base64url(claims).base64url(HMAC-SHA256(claims))` under a key
//! drawn when the server starts, valid for five minutes: nothing to store,
//! and a restart revokes them all.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

use super::error::{ApiError, Code};

pub const SERVICE: &str = "berth-registry";
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Pull,
    Push,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
        }
    }
}

pub struct Auth {
    /// user → bcrypt hash.
    users: HashMap<String, String>,
    pull_only: HashSet<String>,
    key: [u8; 32],
    /// sha256(user:password) of credentials bcrypt has already accepted:
    /// bcrypt is slow by design, and a push sends credentials with every
    /// request.
    verified: Mutex<HashSet<[u8; 32]>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    /// (repository, actions)
    access: Vec<(String, Vec<String>)>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Auth {
    /// Reads `user:hash` lines (bcrypt hashes only, as `htpasswd -B` writes).
    pub fn from_htpasswd(path: &Path, pull_only: &[String]) -> Result<Auth, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("{} line {}: expected user:hash", path.display(), n + 1))?;
            if !hash.starts_with("$2") {
                return Err(format!(
                    "{} line {}: user {user} has no bcrypt hash (make entries with `htpasswd -B`)",
                    path.display(),
                    n + 1
                ));
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        for user in pull_only {
            if !users.contains_key(user) {
                return Err(format!(
                    "pull-only user {user} is not in {}",
                    path.display()
                ));
            }
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| e.to_string())?;
        Ok(Auth {
            users,
            pull_only: pull_only.iter().cloned().collect(),
            key,
            verified: Mutex::new(HashSet::new()),
        })
    }

    fn allowed(&self, user: &str, action: Action) -> bool {
        action == Action::Pull || !self.pull_only.contains(user)
    }

    /// The user whose basic credentials `headers` carry, if they are right.
    /// bcrypt is slow by design (tens of milliseconds): it runs on the
    /// blocking pool, as many at once as there are cores, so a flood of
    /// wrong passwords queues there and never holds up the async workers
    /// that answer everyone else.
    async fn basic_user(&self, headers: &HeaderMap) -> Option<String> {
        static CHECKS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
            std::sync::OnceLock::new();
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let encoded = value.strip_prefix("Basic ")?;
        let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
        let (user, password) = decoded.split_once(':')?;
        let hash = self.users.get(user)?.clone();
        let fingerprint: [u8; 32] = Sha256::digest(decoded.as_bytes()).into();
        if self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&fingerprint)
        {
            return Some(user.to_owned());
        }
        let checks = CHECKS.get_or_init(|| {
            std::sync::Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ))
        });
        // The turn goes with the check itself: a client that hangs up
        // does not free it while bcrypt still runs.
        let turn = checks.clone().acquire_owned().await.ok()?;
        let password = password.to_owned();
        let right = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            bcrypt::verify(password, &hash)
        })
        .await
        .ok()?
        .unwrap_or(false);
        if right {
            self.verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(fingerprint);
            return Some(user.to_owned());
        }
        None
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length works")
    }

    fn token_claims(&self, headers: &HeaderMap) -> Option<Claims> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let token = value.strip_prefix("Bearer ")?.trim();
        let (claims, signature) = token.split_once('.')?;
        let mut mac = self.mac();
        mac.update(claims.as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(signature).ok()?)
            .ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()?;
        (claims.exp > now()).then_some(claims)
    }

    /// Allows the request, or says why not: 401 with a challenge pointing
    /// at `/token` when credentials are missing or wrong, 403 when they are
    /// right but the user may not do this.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        repository: Option<&str>,
        action: Action,
    ) -> Result<(), ApiError> {
        if let Some(user) = self.basic_user(headers).await {
            return if self.allowed(&user, action) {
                Ok(())
            } else {
                Err(ApiError::new(
                    Code::Denied,
                    format!("user {user} may not {} here", action.as_str()),
                ))
            };
        }
        if let Some(claims) = self.token_claims(headers) {
            let granted = match repository {
                // `/v2/` only asks whether the token is good.
                None => true,
                Some(repo) => claims.access.iter().any(|(name, actions)| {
                    name == repo && actions.iter().any(|a| a == action.as_str())
                }),
            };
            if granted {
                return Ok(());
            }
            if !self.allowed(&claims.sub, action) {
                return Err(ApiError::new(
                    Code::Denied,
                    format!("user {} may not {} here", claims.sub, action.as_str()),
                ));
            }
        }
        let mut error = ApiError::new(Code::Unauthorized, "authentication required");
        // Behind TLS (berth's own, or a proxy's) the token endpoint is
        // https too: X-Forwarded-Proto says so.
        let scheme = match headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
        {
            Some("https") => "https",
            _ => "http",
        };
        let realm = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|host| format!("{scheme}://{host}/token"))
            .unwrap_or_else(|| "/token".to_owned());
        let scope = repository
            .map(|repo| {
                let actions = match action {
                    Action::Pull => "pull",
                    Action::Push => "pull,push",
                };
                format!(",scope=\"repository:{repo}:{actions}\"")
            })
            .unwrap_or_default();
        error.challenge = Some(format!(
            "Bearer realm=\"{realm}\",service=\"{SERVICE}\"{scope}"
        ));
        Err(error)
    }

    /// `GET /token?service=&scope=repository:NAME:ACTIONS…`: a token for what
    /// the user asked and may do. Needs basic credentials.
    pub async fn issue_token(
        &self,
        headers: &HeaderMap,
        scopes: &[String],
    ) -> Result<serde_json::Value, ApiError> {
        let user = self.basic_user(headers).await.ok_or_else(|| {
            let mut error = ApiError::new(Code::Unauthorized, "a token needs a user and password");
            error.challenge = Some(format!("Basic realm=\"{SERVICE}\""));
            error
        })?;
        let mut access = Vec::new();
        for scope in scopes {
            let mut parts = scope.splitn(3, ':');
            let (Some("repository"), Some(name), Some(actions)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let granted: Vec<String> = actions
                .split(',')
                .filter_map(|a| match a {
                    "pull" => Some(Action::Pull),
                    "push" | "delete" | "*" => Some(Action::Push),
                    _ => None,
                })
                .filter(|a| self.allowed(&user, *a))
                .map(|a| a.as_str().to_owned())
                .collect();
            access.push((name.to_owned(), granted));
        }
        let claims = Claims {
            sub: user,
            exp: now() + TOKEN_LIFETIME.as_secs(),
            access,
        };
        let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("JSON"));
        let mut mac = self.mac();
        mac.update(claims.as_bytes());
        let token = format!(
            "{claims}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        Ok(serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": TOKEN_LIFETIME.as_secs(),
        }))
    }
}
