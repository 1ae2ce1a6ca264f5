//! A small client of Prometheus' HTTP query API (`GET /api/v1/query`), for
//! the switch guard: one instant query, one number back. Every query is
//! bounded by a timeout (connect, answer and body together) and its answer
//! by a size limit; an answer that is not the documented JSON shape is an
//! error, never a number.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Deserialize;

use crate::error::describe;

/// An instant query's answer is a handful of samples; a bigger one is not
/// the answer to our queries.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// Idle pooled connections to Prometheus are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Prometheus' base URL: `http://host[:port][/prefix]` (the prefix of a
/// Prometheus run with `--web.route-prefix`).
#[derive(Clone, PartialEq, Eq)]
pub struct PrometheusUrl(String);

impl PrometheusUrl {
    /// A clap value parser.
    pub fn parse(text: &str) -> Result<PrometheusUrl, String> {
        let uri: http::Uri = text.parse().map_err(|e| format!("invalid URL {text:?}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "invalid Prometheus URL {text:?}: only http:// URLs are supported"
            ));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("invalid Prometheus URL {text:?}: no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "invalid Prometheus URL {text:?}: credentials in URLs are not supported"
            ));
        }
        if uri.query().is_some() {
            return Err(format!("invalid Prometheus URL {text:?}: no query string expected"));
        }
        Ok(PrometheusUrl(format!(
            "http://{authority}{}",
            uri.path().trim_end_matches('/')
        )))
    }
}

impl fmt::Display for PrometheusUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PrometheusUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Why a query gave no number.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueryError {
    #[error("cannot reach Prometheus at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("Prometheus at {url} did not answer within {} ms", .timeout.as_millis())]
    Timeout { url: String, timeout: Duration },
    #[error("Prometheus answered {status}: {message}")]
    Failed { status: u16, message: String },
    #[error("unexpected answer from Prometheus: {0}")]
    Invalid(String),
}

/// `{"status":"success","data":{"resultType":"vector","result":[...]}}`, or
/// `{"status":"error","errorType":"...","error":"..."}`.
#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Vec<Sample>,
}

#[derive(Deserialize)]
struct Sample {
    #[serde(default)]
    metric: std::collections::HashMap<String, String>,
    /// `[<unix time>, "<value>"]`; the value is a string ("NaN", "+Inf" too).
    value: (f64, String),
}

impl Sample {
    fn number(&self) -> Result<f64, QueryError> {
        self.value
            .1
            .parse()
            .map_err(|_| QueryError::Invalid(format!("sample value {:?} is not a number", self.value.1)))
    }
}

pub struct PrometheusApi {
    base: PrometheusUrl,
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl PrometheusApi {
    pub fn new(base: PrometheusUrl, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        PrometheusApi { base, client, timeout }
    }

    pub fn url(&self) -> &PrometheusUrl {
        &self.base
    }

    /// The value of an instant query that yields at most one sample (e.g.
    /// `sum(...)`): `None` when the result is empty or not a finite number
    /// (no series matched, or a quantile of no requests).
    pub async fn scalar(&self, promql: &str) -> Result<Option<f64>, QueryError> {
        let (status, body) = self.fetch(promql).await?;
        parse_scalar(status, &body)
    }

    /// An instant query's finite samples as (value of `label`, value).
    pub async fn vector(&self, promql: &str, label: &str) -> Result<Vec<(String, f64)>, QueryError> {
        let (status, body) = self.fetch(promql).await?;
        let samples = parse_vector(status, &body)?;
        let mut values = Vec::with_capacity(samples.len());
        for sample in &samples {
            let value = sample.number()?;
            if value.is_finite() {
                values.push((sample.metric.get(label).cloned().unwrap_or_default(), value));
            }
        }
        Ok(values)
    }

    /// One instant query: the answer's status and body.
    async fn fetch(&self, promql: &str) -> Result<(u16, bytes::Bytes), QueryError> {
        let url = format!(
            "{}/api/v1/query?query={}&timeout={}ms",
            self.base,
            encode_component(promql),
            self.timeout.as_millis()
        );
        let uri: http::Uri = url
            .parse()
            .map_err(|e| QueryError::Invalid(format!("cannot build the query URL: {e}")))?;
        let request = http::Request::get(uri)
            .header(http::header::USER_AGENT, "vigie-router-guard")
            .body(Empty::new())
            .map_err(|e| QueryError::Invalid(format!("cannot build the query request: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| QueryError::Unreachable {
                    url: self.base.to_string(),
                    message: describe(&e),
                })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| QueryError::Unreachable {
                    url: self.base.to_string(),
                    message: format!("cannot read the answer: {e}"),
                })?
                .to_bytes();
            Ok::<_, QueryError>((status, body))
        };
        let (status, body) =
            tokio::time::timeout(self.timeout, exchange)
                .await
                .map_err(|_| QueryError::Timeout {
                    url: self.base.to_string(),
                    timeout: self.timeout,
                })??;
        Ok((status.as_u16(), body))
    }
}

/// The one sample of an instant query's answer (see [`PrometheusApi::scalar`]).
fn parse_scalar(status: u16, body: &[u8]) -> Result<Option<f64>, QueryError> {
    match parse_vector(status, body)?.as_slice() {
        [] => Ok(None),
        [sample] => {
            let value = sample.number()?;
            Ok(value.is_finite().then_some(value))
        }
        more => Err(QueryError::Invalid(format!("expected one sample, got {}", more.len()))),
    }
}

/// Reads the answer of an instant query: its samples.
fn parse_vector(status: u16, body: &[u8]) -> Result<Vec<Sample>, QueryError> {
    let answer: Answer = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(e) if (200..300).contains(&status) => {
            return Err(QueryError::Invalid(format!("not the query API's JSON: {e}")))
        }
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_owned();
            return Err(QueryError::Failed { status, message: text });
        }
    };
    if answer.status != "success" {
        return Err(QueryError::Failed {
            status,
            message: answer.error.unwrap_or_else(|| format!("status {:?}", answer.status)),
        });
    }
    let data = answer
        .data
        .ok_or_else(|| QueryError::Invalid("a success without data".into()))?;
    if data.result_type != "vector" {
        return Err(QueryError::Invalid(format!(
            "expected a vector, got a {}",
            data.result_type
        )));
    }
    Ok(data.result)
}

/// Percent-encodes a query parameter value (RFC 3986: everything but the
/// unreserved characters).
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_base_urls_with_an_optional_prefix() {
        let url = |text| PrometheusUrl::parse(text).map(|u| u.to_string());
        assert_eq!(url("http://prometheus:9090"), Ok("http://prometheus:9090".into()));
        assert_eq!(url("http://prometheus:9090/"), Ok("http://prometheus:9090".into()));
        assert_eq!(url("http://p:9090/prom/"), Ok("http://p:9090/prom".into()));
        for bad in [
            "https://p:9090",
            "p:9090",
            "http://u:p@p:9090",
            "http://p:9090/?x=1",
            "",
        ] {
            assert!(PrometheusUrl::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn encodes_promql_for_a_query_string() {
        assert_eq!(
            encode_component(r#"sum(x{a="b",c=~"/api/.*"}[15s])"#),
            "sum%28x%7Ba%3D%22b%22%2Cc%3D~%22%2Fapi%2F.%2A%22%7D%5B15s%5D%29"
        );
    }

    #[test]
    fn reads_one_sample_or_none_and_rejects_other_shapes() {
        let ok = |body: &str| parse_scalar(200, body.as_bytes());
        assert_eq!(
            ok(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"0.25"]}]}}"#)
                .expect("one sample"),
            Some(0.25)
        );
        assert_eq!(
            ok(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#).expect("empty"),
            None
        );
        assert_eq!(
            ok(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#)
                .expect("NaN"),
            None
        );
        assert!(ok(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#).is_err());
        assert!(ok(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]},{"value":[1,"2"]}]}}"#
        )
        .is_err());
        assert!(ok(r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"x"]}]}}"#).is_err());
        assert!(ok("<html>").is_err());
        let failed = parse_scalar(
            400,
            br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
        );
        assert!(matches!(failed, Err(QueryError::Failed { status: 400, ref message }) if message == "parse error"));
        assert!(matches!(
            parse_scalar(502, b"Bad Gateway"),
            Err(QueryError::Failed { status: 502, .. })
        ));
    }
}
