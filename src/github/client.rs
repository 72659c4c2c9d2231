//! The one HTTP client: octocrab over rustls, driven by a tokio current-thread runtime that
//! lives and dies here (the rest of ci-janitor stays synchronous). Every request is bounded
//! by a per-request time and by the whole API phase's deadline; a 5xx or a dropped
//! connection is retried with backoff while time is left; a rate limit is waited out when
//! its reset comes before the deadline.

use std::time::{Duration, Instant};

use http::{HeaderMap, Method};
use http_body_util::BodyExt;

/// The most one request may take (connect, send, the whole answer).
pub const PER_REQUEST: Duration = Duration::from_secs(5);
/// Attempts per request (5xx, transport errors).
const ATTEMPTS: u32 = 3;
/// The first backoff; doubled each retry.
const BACKOFF: Duration = Duration::from_millis(250);
/// The largest answer read.
const MAX_BODY: usize = 16 << 20;

/// An answer with a 2xx status.
#[derive(Debug, Clone)]
pub struct Reply {
    pub body: String,
    /// The `rel="next"` page of a paginated answer, as a path and query.
    pub next: Option<String>,
}

/// Why a request did not get a 2xx answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The API answered with this status (after the retries, for a 5xx) and message.
    Status(u16, String),
    /// Rate limited, and the limit resets after the deadline.
    RateLimited,
    /// The deadline (per request or for the whole phase) passed.
    Timeout,
    /// No answer: the connection failed (after the retries).
    Transport(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(s, m) if m.is_empty() => write!(f, "HTTP {s}"),
            Failure::Status(s, m) => write!(f, "HTTP {s} ({m})"),
            Failure::RateLimited => write!(f, "rate limited until after the deadline"),
            Failure::Timeout => write!(f, "no answer in time"),
            Failure::Transport(e) => write!(f, "no connection ({e})"),
        }
    }
}

#[derive(Debug)]
pub struct Client {
    rt: tokio::runtime::Runtime,
    octo: octocrab::Octocrab,
    until: Instant,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The `rel="next"` URL of a `Link` header, as a path and query (the client adds the base,
/// and sends the token only to it).
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        if !params.split(';').any(|p| p.trim() == "rel=\"next\"") {
            return None;
        }
        let url = url.trim().trim_start_matches('<').trim_end_matches('>');
        let path = match url.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => url,
        };
        Some(path.to_owned())
    })
}

/// How long a rate limit asks us to wait, if the answer is one: `retry-after` seconds, or
/// until `x-ratelimit-reset` when `x-ratelimit-remaining` is 0 (403 or 429).
pub fn rate_limit_wait(status: u16, h: &HeaderMap, now_unix: u64) -> Option<Duration> {
    if status != 403 && status != 429 {
        return None;
    }
    if let Some(s) = header(h, "retry-after").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_secs(s));
    }
    if header(h, "x-ratelimit-remaining").map(str::trim) == Some("0") {
        let reset = header(h, "x-ratelimit-reset")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(now_unix + 60);
        return Some(Duration::from_secs(reset.saturating_sub(now_unix)));
    }
    (status == 429).then_some(Duration::from_secs(60))
}

fn message_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

impl Client {
    /// A client of `api_url` with `token`, that gives up at `until`.
    pub fn new(api_url: &str, token: &str, until: Instant) -> Result<Client, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("start the runtime: {e}"))?;
        let octo = {
            let _in_runtime = rt.enter();
            octocrab::Octocrab::builder()
                .base_uri(api_url.trim_end_matches('/'))
                .map_err(|e| format!("use GITHUB_API_URL {api_url}: {e}"))?
                .personal_token(token.to_owned())
                .set_connect_timeout(Some(PER_REQUEST))
                .set_read_timeout(Some(PER_REQUEST))
                .set_write_timeout(Some(PER_REQUEST))
                .build()
                .map_err(|e| format!("build the HTTP client: {e}"))?
        };
        Ok(Client { rt, octo, until })
    }

    /// Time left before the deadline.
    pub fn left(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }

    pub fn get(&self, path: &str) -> Result<Reply, Failure> {
        self.send(Method::GET, path, None)
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> Result<Reply, Failure> {
        self.send(Method::POST, path, Some(body))
    }

    pub fn patch(&self, path: &str, body: &serde_json::Value) -> Result<Reply, Failure> {
        self.send(Method::PATCH, path, Some(body))
    }

    fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, Failure> {
        self.rt.block_on(self.send_async(method, path, body))
    }

    async fn once(
        &self,
        method: &Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, HeaderMap, String), String> {
        let uri: http::Uri = path.parse().map_err(|e| format!("bad path {path}: {e}"))?;
        let resp = match *method {
            Method::POST => self.octo._post(uri, body).await,
            Method::PATCH => self.octo._patch(uri, body).await,
            _ => self.octo._get(uri).await,
        }
        .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut bytes = Vec::new();
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Some(data) = frame.data_ref() {
                bytes.extend_from_slice(data);
                if bytes.len() > MAX_BODY {
                    return Err("the answer is too large".into());
                }
            }
        }
        Ok((
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        ))
    }

    async fn send_async(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, Failure> {
        let mut attempt = 0;
        let mut waits = 0;
        loop {
            attempt += 1;
            let left = self.left();
            if left < Duration::from_millis(50) {
                return Err(Failure::Timeout);
            }
            let bound = left.min(PER_REQUEST);
            let result = tokio::time::timeout(bound, self.once(&method, path, body)).await;
            tracing::debug!(%method, path, attempt, ok = result.is_ok(), "GitHub API request");
            let retry = match result {
                Err(_) => return Err(Failure::Timeout),
                Ok(Err(e)) => {
                    if attempt >= ATTEMPTS {
                        return Err(Failure::Transport(e));
                    }
                    Failure::Transport(e)
                }
                Ok(Ok((status, headers, text))) => {
                    if (200..300).contains(&status) {
                        let next = header(&headers, "link").and_then(next_link);
                        return Ok(Reply { body: text, next });
                    }
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    if let Some(wait) = rate_limit_wait(status, &headers, now) {
                        // Waited out only when it ends well before the deadline.
                        if waits >= 2 || wait + Duration::from_millis(500) >= self.left() {
                            return Err(Failure::RateLimited);
                        }
                        waits += 1;
                        attempt -= 1;
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    let failure = Failure::Status(status, message_of(&text));
                    if status < 500 || attempt >= ATTEMPTS {
                        return Err(failure);
                    }
                    failure
                }
            };
            let backoff = BACKOFF * 2u32.pow(attempt - 1);
            if backoff + Duration::from_millis(100) >= self.left() {
                return Err(retry);
            }
            tokio::time::sleep(backoff).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_become_paths() {
        let link = r#"<https://api.github.com/repositories/1/issues/2/comments?page=2>; rel="next", <https://api.github.com/repositories/1/issues/2/comments?page=5>; rel="last""#;
        assert_eq!(
            next_link(link).as_deref(),
            Some("/repositories/1/issues/2/comments?page=2")
        );
        assert_eq!(next_link(r#"<https://x/a?page=1>; rel="prev""#), None);
        assert_eq!(
            next_link(r#"<http://127.0.0.1:9/api/v3/x?page=3>; rel="next""#).as_deref(),
            Some("/api/v3/x?page=3")
        );
    }

    #[test]
    fn rate_limits_are_read_from_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(
            rate_limit_wait(403, &h, 100),
            None,
            "a plain 403 is a permission"
        );
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        h.insert("x-ratelimit-reset", "103".parse().unwrap());
        assert_eq!(rate_limit_wait(403, &h, 100), Some(Duration::from_secs(3)));
        assert_eq!(rate_limit_wait(500, &h, 100), None);
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(rate_limit_wait(429, &h, 100), Some(Duration::from_secs(2)));
    }
}
