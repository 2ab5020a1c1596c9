//! Who may use the dashboard: one-time sign-in codes, minted for whoever
//! holds the admin token (`berth dashboard`), each exchanged once for a
//! session, which the browser keeps in an HttpOnly, SameSite=Strict cookie.
//! Both are random, kept in memory only (a restarted daemon asks for a new
//! sign-in), expire, and are bounded in number, so no flood of sign-ins
//! grows the daemon.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a sign-in code may wait to be used.
const CODE_LIFE: Duration = Duration::from_secs(300);
/// How long a session lasts from its sign-in.
const SESSION_LIFE: Duration = Duration::from_secs(12 * 3600);
/// Codes and sessions kept at most: past these the oldest go.
const MAX_CODES: usize = 64;
const MAX_SESSIONS: usize = 256;

#[derive(Default)]
pub struct Sessions {
    inner: parking_lot::Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Code → when it stops being accepted.
    codes: HashMap<String, Instant>,
    /// Session → when it ends.
    sessions: HashMap<String, Instant>,
}

fn random() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Drops what has expired, then the soonest to expire while over `max`.
fn prune(map: &mut HashMap<String, Instant>, max: usize) {
    let now = Instant::now();
    map.retain(|_, until| *until > now);
    while map.len() >= max {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, until)| **until)
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        map.remove(&oldest);
    }
}

impl Sessions {
    /// A new sign-in code, good once within [`CODE_LIFE`].
    pub fn mint(&self) -> Result<String, getrandom::Error> {
        let code = random()?;
        let mut inner = self.inner.lock();
        prune(&mut inner.codes, MAX_CODES);
        inner.codes.insert(code.clone(), Instant::now() + CODE_LIFE);
        Ok(code)
    }

    /// Exchanges `code` for a session, once.
    pub fn redeem(&self, code: &str) -> Option<String> {
        let mut inner = self.inner.lock();
        let until = inner.codes.remove(code)?;
        if until <= Instant::now() {
            return None;
        }
        let session = random().ok()?;
        prune(&mut inner.sessions, MAX_SESSIONS);
        inner
            .sessions
            .insert(session.clone(), Instant::now() + SESSION_LIFE);
        Some(session)
    }

    pub fn valid(&self, session: &str) -> bool {
        self.inner
            .lock()
            .sessions
            .get(session)
            .is_some_and(|until| *until > Instant::now())
    }

    pub fn end(&self, session: &str) {
        self.inner.lock().sessions.remove(session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_signs_in_once() {
        let sessions = Sessions::default();
        let code = sessions.mint().unwrap();
        let session = sessions.redeem(&code).unwrap();
        assert!(sessions.valid(&session));
        assert_eq!(sessions.redeem(&code), None);
        assert!(!sessions.valid("made-up"));
        sessions.end(&session);
        assert!(!sessions.valid(&session));
    }

    #[test]
    fn a_flood_of_codes_keeps_only_the_newest() {
        let sessions = Sessions::default();
        let first = sessions.mint().unwrap();
        for _ in 0..1000 {
            sessions.mint().unwrap();
        }
        assert!(sessions.inner.lock().codes.len() <= MAX_CODES);
        assert_eq!(sessions.redeem(&first), None);
    }
}
