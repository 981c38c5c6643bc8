//! Who may do what: the two bearer tokens (compared in constant time, so response timing does
//! not leak how much of a guess was right) and the web UI's signed sign-in sessions. The API's
//! extractors ([`crate::http::auth`]) and the UI's sign-in both decide through here.

use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;

use super::{ApiConfig, AppState};

/// Which token a request presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    Admin,
    Worker,
}

/// The token of an `Authorization: Bearer TOKEN` header; the scheme's case does not matter
/// (RFC 9110 §11.1).
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The known token the request presents as a bearer header, if any.
pub fn presented(parts: &Parts, state: &AppState) -> Option<Presented> {
    let token = bearer(parts)?;
    if constant_time_eq(token.as_bytes(), state.config.admin_token.expose().as_bytes()) {
        Some(Presented::Admin)
    } else if constant_time_eq(token.as_bytes(), state.config.worker_token.expose().as_bytes()) {
        Some(Presented::Worker)
    } else {
        None
    }
}

/// The cookie the web UI's sign-in sets: a signed session (see [`Sessions`]), never a token.
/// It allows reads only.
pub const SESSION_COOKIE: &str = "frontier_session";

/// Whether `token` is the admin or the worker token.
pub fn token_known(token: &str, state: &AppState) -> bool {
    constant_time_eq(token.as_bytes(), state.config.admin_token.expose().as_bytes())
        || constant_time_eq(token.as_bytes(), state.config.worker_token.expose().as_bytes())
}

/// The value of the request's [`SESSION_COOKIE`], if any.
fn session_cookie(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// Whether a read is allowed: reads are open, or a known token comes as a bearer header, or a
/// valid sign-in session in the cookie. (Mutations never accept the cookie, so a page cannot be
/// tricked into one.)
pub fn read_allowed(parts: &Parts, state: &AppState) -> bool {
    !state.config.protect_reads
        || presented(parts, state).is_some()
        || session_cookie(parts).is_some_and(|s| state.sessions.valid(s, crate::clock::clock_ms()))
}

/// The web UI's sign-in sessions and the throttle on wrong sign-ins.
///
/// A session is `v1.EXPIRES_MS.NONCE.MAC`: an expiry, a random nonce, and an HMAC-SHA256 of both
/// under a key drawn at random when the coordinator starts. The cookie therefore holds nothing
/// derived from a token (a stolen cookie reveals no token and cannot be tested offline against
/// guesses of one), expires on its own, and every session ends when the coordinator restarts.
/// Nothing is kept per session, so there is nothing to grow or clean up.
///
/// Wrong sign-ins are counted per client address: after `max_failed_sign_ins` within
/// `sign_in_window` the client is answered 429 until the window has passed.
pub struct Sessions {
    key: [u8; 32],
    ttl_ms: i64,
    max_failures: u32,
    window: std::time::Duration,
    failures: std::sync::Mutex<std::collections::HashMap<String, (u32, std::time::Instant)>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("ttl_ms", &self.ttl_ms).finish_non_exhaustive()
    }
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Clients whose failures are remembered at most; older windows are dropped first.
const MAX_THROTTLED_CLIENTS: usize = 10_000;

impl Sessions {
    pub fn new(config: &ApiConfig) -> Self {
        Self {
            key: rand::random(),
            ttl_ms: i64::try_from(config.session_ttl.as_millis()).unwrap_or(i64::MAX),
            max_failures: config.max_failed_sign_ins.max(1),
            window: config.sign_in_window,
            failures: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        use hmac::Mac;
        // HMAC takes a key of any length; this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(payload.as_bytes());
        mac
    }

    /// A new session, valid for the configured time from `now_ms`.
    pub fn issue(&self, now_ms: i64) -> String {
        use hmac::Mac;
        let nonce: [u8; 16] = rand::random();
        let payload = format!("v1.{}.{}", now_ms.saturating_add(self.ttl_ms), hex(&nonce));
        let tag = self.mac(&payload).finalize().into_bytes();
        format!("{payload}.{}", hex(&tag))
    }

    /// Whether `session` was issued by this coordinator and has not expired.
    pub fn valid(&self, session: &str, now_ms: i64) -> bool {
        use hmac::Mac;
        let Some((payload, tag)) = session.rsplit_once('.') else {
            return false;
        };
        let mut parts = payload.split('.');
        let (Some("v1"), Some(expires), Some(_nonce), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Some(tag) = unhex(tag) else {
            return false;
        };
        // The MAC first (in constant time), then the expiry it vouches for.
        self.mac(payload).verify_slice(&tag).is_ok() && expires.parse::<i64>().is_ok_and(|e| now_ms < e)
    }

    /// How long `client` must wait before its next sign-in attempt, when it has used up its
    /// wrong attempts within the window.
    pub fn throttled(&self, client: &str, now: std::time::Instant) -> Option<std::time::Duration> {
        let failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let &(count, since) = failures.get(client)?;
        let left = self.window.checked_sub(now.duration_since(since))?;
        (count >= self.max_failures && !left.is_zero()).then_some(left)
    }

    /// Counts a wrong sign-in of `client`.
    pub fn failed(&self, client: &str, now: std::time::Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() >= MAX_THROTTLED_CLIENTS {
            let window = self.window;
            failures.retain(|_, (_, since)| now.duration_since(*since) < window);
            if failures.len() >= MAX_THROTTLED_CLIENTS {
                failures.clear();
            }
        }
        let entry = failures.entry(client.to_owned()).or_insert((0, now));
        if now.duration_since(entry.1) >= self.window {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
    }

    /// Forgets `client`'s wrong sign-ins after a right one.
    pub fn succeeded(&self, client: &str) {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(client);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() || b.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
