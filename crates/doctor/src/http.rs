//! The doctor's HTTP client: GET only, every request bounded by the
//! `--timeout`, bodies bounded in size, and errors that say what happened
//! at which URL ("connection refused at http://127.0.0.1:3100/ready").

use std::error::Error as _;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::config::defaults;

/// Credentials of one request.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    Basic { user: &'a str, password: Option<&'a str> },
}

/// Owned credentials, for requests made from spawned tasks.
#[derive(Debug, Clone, Default)]
pub enum Credentials {
    #[default]
    None,
    Basic {
        user: String,
        password: Option<String>,
    },
}

impl Credentials {
    pub fn auth(&self) -> Auth<'_> {
        match self {
            Credentials::None => Auth::None,
            Credentials::Basic { user, password } => Auth::Basic {
                user,
                password: password.as_deref(),
            },
        }
    }
}

/// Why a request got no usable answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum HttpError {
    #[error("no answer within {timeout} at {url}")]
    Timeout { url: String, timeout: String },
    #[error("{cause} at {url}")]
    Connect { url: String, cause: String },
    #[error("answer larger than {limit} bytes at {url}")]
    TooLarge { url: String, limit: usize },
    #[error("{cause} at {url}")]
    Other { url: String, cause: String },
    #[error("{url} answered {status} with a body that is not the expected JSON ({cause})")]
    BadJson { url: String, status: u16, cause: String },
}

/// A complete answer, whatever its status code.
#[derive(Debug, Clone)]
pub struct Answer {
    pub url: String,
    pub status: u16,
    pub body: Vec<u8>,
}

/// Longest piece of a body quoted in a report line.
const SNIPPET_CHARS: usize = 160;

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::BadJson {
            url: self.url.clone(),
            status: self.status,
            cause: e.to_string(),
        })
    }

    /// The body on one line, shortened: for quoting an error answer. A JSON
    /// body's `message` (Grafana, the router) or `error` (Prometheus) field
    /// is preferred to the whole document.
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let parsed: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        let field = parsed.as_ref().and_then(|v| {
            ["message", "error"]
                .iter()
                .find_map(|k| v.get(*k).and_then(serde_json::Value::as_str).map(str::to_owned))
        });
        let text = field.unwrap_or_else(|| text.into_owned());
        let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if one_line.chars().count() > SNIPPET_CHARS {
            let cut: String = one_line.chars().take(SNIPPET_CHARS).collect();
            format!("{cut}…")
        } else {
            one_line
        }
    }

    /// "503 at http://…: <snippet>", for a status the check did not expect.
    pub fn unexpected(&self) -> String {
        let snippet = self.snippet();
        if snippet.is_empty() {
            format!("answered {} at {}", self.status, self.url)
        } else {
            format!("answered {} at {}: {snippet}", self.status, self.url)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    timeout: Duration,
}

impl Http {
    pub fn new(timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // The doctor checks local services: a proxy from the environment
            // would answer for them and hide a refused connection.
            .no_proxy()
            .user_agent(format!("vigie-doctor/{}", vigie_telemetry::VERSION))
            .build()?;
        Ok(Http { client, timeout })
    }

    /// `GET base + path` with `query` and `auth`; any status is an answer.
    pub async fn get(&self, url: &str, query: &[(&str, &str)], auth: Auth<'_>) -> Result<Answer, HttpError> {
        // Both reqwest and this guard bound the request: the guard also
        // covers reading the body chunk by chunk.
        match tokio::time::timeout(self.timeout, self.exchange(url, query, auth)).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout {
                url: url.to_owned(),
                timeout: human_duration(self.timeout),
            }),
        }
    }

    async fn exchange(&self, url: &str, query: &[(&str, &str)], auth: Auth<'_>) -> Result<Answer, HttpError> {
        let mut request = self.client.get(url).header(reqwest::header::ACCEPT, "application/json");
        if !query.is_empty() {
            request = request.query(query);
        }
        request = match auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Basic { user, password } => request.basic_auth(user, password),
        };
        let mut response = request.send().await.map_err(|e| self.describe(url, &e))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.describe(url, &e))? {
            if body.len() + chunk.len() > defaults::MAX_BODY_BYTES {
                return Err(HttpError::TooLarge {
                    url: url.to_owned(),
                    limit: defaults::MAX_BODY_BYTES,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            url: url.to_owned(),
            status,
            body,
        })
    }

    fn describe(&self, url: &str, error: &reqwest::Error) -> HttpError {
        let url = url.to_owned();
        if error.is_timeout() {
            return HttpError::Timeout {
                url,
                timeout: human_duration(self.timeout),
            };
        }
        let cause = root_cause(error);
        if error.is_connect() {
            HttpError::Connect { url, cause }
        } else {
            HttpError::Other { url, cause }
        }
    }
}

/// The innermost error message, lower-cased at its start and without the
/// OS error number: "connection refused", "failed to lookup address
/// information: Name or service not known".
fn root_cause(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        message = inner.to_string();
        source = inner.source();
    }
    let message = match message.find(" (os error") {
        Some(at) => message[..at].to_owned(),
        None => message,
    };
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "request failed".to_owned(),
    }
}

/// `5s`, `1.5s`, `250ms`: as the flags are written.
pub fn human_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis % 1000 == 0 {
        format!("{}s", millis / 1000)
    } else if millis < 1000 {
        format!("{millis}ms")
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            url: "http://x/y".to_owned(),
            status,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn snippets_prefer_the_message_field_and_stay_on_one_line() {
        assert_eq!(
            answer(400, r#"{"status":"ERROR","message":"dial tcp: refused"}"#).snippet(),
            "dial tcp: refused"
        );
        assert_eq!(
            answer(400, r#"{"status":"error","error":"bad_data"}"#).snippet(),
            "bad_data"
        );
        assert_eq!(
            answer(503, "Ingester not ready:\nwaiting for 15s\n").snippet(),
            "Ingester not ready: waiting for 15s"
        );
        let long = "x".repeat(500);
        assert_eq!(answer(500, &long).snippet().chars().count(), SNIPPET_CHARS + 1);
        assert_eq!(answer(503, "").unexpected(), "answered 503 at http://x/y");
    }

    #[test]
    fn durations_read_like_flags() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let url = format!("http://127.0.0.1:{port}/ready");
        let http = Http::new(Duration::from_secs(2)).expect("client");
        let error = http.get(&url, &[], Auth::None).await.expect_err("nothing listens");
        assert!(matches!(error, HttpError::Connect { .. }), "{error:?}");
        assert_eq!(error.to_string(), format!("connection refused at {url}"));
    }

    #[tokio::test]
    async fn a_silent_server_times_out_at_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Accepts and never answers.
        let _server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let http = Http::new(Duration::from_millis(300)).expect("client");
        let started = std::time::Instant::now();
        let error = http
            .get(&format!("http://{addr}/-/ready"), &[], Auth::None)
            .await
            .expect_err("no answer");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(
            error.to_string(),
            format!("no answer within 300ms at http://{addr}/-/ready")
        );
    }
}
