//! The stack under examination: where each service is, how to call it, and
//! the facts several checks need, fetched once however many checks ask
//! (the router's active color, Prometheus' targets).
//!
//! Tempo is reached directly (`--tempo`, or its compose name with
//! `--compose`) or, from the host where compose does not publish it, through
//! Grafana's data source proxy: `GET <grafana>/api/datasources/proxy/uid/tempo/<path>`
//! is relayed to `http://tempo:3200/<path>` (Grafana HTTP API, data source
//! proxy calls; Grafana's own Tempo query editor calls Tempo's API that way).

use std::collections::BTreeMap;

use serde::Deserialize;
use tokio::sync::OnceCell;
use vigie_telemetry::Color;

use crate::check::{CheckId, Component, Failure};
use crate::config::{defaults, Args, Endpoints};
use crate::http::{Answer, Auth, Credentials, Http, HttpError};

/// What to do when Grafana refuses a request.
pub const GRAFANA_AUTH_HINT: &str = "give a Grafana login with --grafana-user/--grafana-password \
    (VIGIE_GRAFANA_USER/VIGIE_GRAFANA_PASSWORD), or enable the anonymous viewer";

/// How the doctor reaches Tempo's HTTP API.
#[derive(Debug, Clone, PartialEq)]
pub enum TempoRoute {
    /// `--tempo URL`, or `http://tempo:3200` with `--compose`.
    Direct(String),
    /// From the host: Grafana's data source proxy for the Tempo data
    /// source (this base URL, then Tempo's path).
    Grafana(String),
    /// From the host with Grafana skipped: nothing can relay.
    Unavailable,
}

impl TempoRoute {
    /// Said at the end of each Tempo line when the answer came through Grafana.
    pub fn note(&self) -> &'static str {
        match self {
            TempoRoute::Grafana(_) => " (through Grafana's data source proxy: Tempo is not published on the host)",
            _ => "",
        }
    }

    /// `direct` or `grafana`, for the JSON report.
    pub fn as_str(&self) -> &'static str {
        match self {
            TempoRoute::Direct(_) => "direct",
            TempoRoute::Grafana(_) => "grafana",
            TempoRoute::Unavailable => "none",
        }
    }
}

/// What the router's `GET /status` says (only the fields the doctor reads).
#[derive(Debug, Clone, Deserialize)]
pub struct RouterStatus {
    pub active: Color,
}

/// One entry of Prometheus' `GET /api/v1/targets` `activeTargets`
/// (https://prometheus.io/docs/prometheus/latest/querying/api/#targets).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Target {
    pub labels: BTreeMap<String, String>,
    pub scrape_pool: String,
    pub scrape_url: String,
    pub last_error: String,
    /// "up", "down" or "unknown" (not scraped yet).
    pub health: String,
}

impl Target {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn job(&self) -> &str {
        self.label("job")
    }
}

/// Every Prometheus API answer: `{"status": "success"|"error", "data": …,
/// "errorType": …, "error": …}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromEnvelope<T> {
    pub status: String,
    pub data: Option<T>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetsData {
    #[serde(default)]
    active_targets: Vec<Target>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryData {
    #[serde(default)]
    result: Vec<Sample>,
}

#[derive(Debug, Deserialize)]
struct Sample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
}

/// Whether a connection error says the host name did not resolve
/// (reqwest: "failed to lookup address information: …", "dns error").
pub fn is_unresolved(cause: &str) -> bool {
    cause.contains("lookup") || cause.contains("dns error")
}

/// The doctor inside the compose network, where every service answers.
pub const COMPOSE_RUN: &str = "docker compose exec router vigie doctor --compose";

pub struct Stack {
    pub args: Args,
    pub urls: Endpoints,
    pub http: Http,
    /// `--optional` services found not running, and the error that said so.
    absent: BTreeMap<&'static str, String>,
    router_status: OnceCell<Result<RouterStatus, Failure>>,
    targets: OnceCell<Result<Vec<Target>, Failure>>,
}

impl Stack {
    pub fn new(args: Args) -> anyhow::Result<Self> {
        let http = Http::new(args.timeout)?;
        let urls = args.endpoints();
        Ok(Stack {
            args,
            urls,
            http,
            absent: BTreeMap::new(),
            router_status: OnceCell::new(),
            targets: OnceCell::new(),
        })
    }

    /// Finds which `--optional` services are not running, asking each
    /// (not skipped) one at once. Inside the compose network (`--compose`)
    /// that is a name that does not resolve: compose removes a stopped
    /// service's name, while a container still starting has its name and
    /// refuses connections. From the host, where services are addresses, a
    /// refused connection is all there is to tell. A service that answers,
    /// whatever it answers, or that times out, is there and is checked.
    /// Promtail and Alloy have no URL here: their Prometheus target tells.
    pub async fn find_absent(&mut self) {
        let urls = [
            (Component::Loki, Some(self.urls.loki.clone())),
            (Component::Tempo, self.urls.tempo.clone()),
            (Component::Grafana, Some(self.urls.grafana.clone())),
            (Component::Alertmanager, Some(self.urls.alertmanager.clone())),
        ];
        let mut probes = tokio::task::JoinSet::new();
        for (component, url) in urls {
            let service = component.as_str();
            let Some(url) = url.filter(|_| self.args.is_optional(service) && !self.skips_component(component)) else {
                continue;
            };
            let http = self.http.clone();
            probes.spawn(async move {
                (
                    service,
                    url.clone(),
                    http.get(&format!("{url}/"), &[], Auth::None).await,
                )
            });
        }
        while let Some(Ok((service, url, answer))) = probes.join_next().await {
            if let Err(HttpError::Connect { cause, .. }) = answer {
                if is_unresolved(&cause) || (!self.args.compose && cause.contains("refused")) {
                    self.absent.insert(service, format!("{cause} at {url}"));
                }
            }
        }
    }

    /// Why `service` counts as absent: it is optional and not running.
    pub fn absent(&self, service: &str) -> Option<&str> {
        self.absent.get(service).map(String::as_str)
    }

    pub fn skips(&self, id: CheckId) -> bool {
        self.args.skips(id)
    }

    pub fn skips_component(&self, component: Component) -> bool {
        self.args.skips_component(component)
    }

    /// How to run a command against a compose service, for hints.
    pub fn compose_ps(service: &str) -> String {
        format!("docker compose ps {service}")
    }

    /// The hint for a service that cannot be reached.
    pub fn unreachable_hint(service: &str) -> String {
        format!(
            "is the {service} container running? {}; docker compose logs {service} --tail 50",
            Stack::compose_ps(service)
        )
    }

    /// `GET <prometheus><path>` and the `data` of a successful answer.
    pub async fn prometheus_api<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, Failure> {
        let url = format!("{}{path}", self.urls.prometheus);
        let answer = self
            .http
            .get(&url, query, Auth::None)
            .await
            .map_err(|e| self.prometheus_unreachable(&e))?;
        // Errors come with a 4xx/5xx status and the same envelope.
        let envelope: PromEnvelope<T> = answer
            .json()
            .map_err(|e| Failure::new(e.to_string(), "is this Prometheus?"))?;
        match (envelope.status.as_str(), envelope.data) {
            ("success", Some(data)) if answer.is_success() => Ok(data),
            _ => Err(Failure::new(
                format!(
                    "Prometheus answered {} at {url}: {}",
                    answer.status,
                    envelope.error.unwrap_or_else(|| "no data".to_owned())
                ),
                "docker compose logs prometheus --tail 50",
            )),
        }
    }

    fn prometheus_unreachable(&self, error: &HttpError) -> Failure {
        Failure::new(error.to_string(), Stack::unreachable_hint("prometheus"))
    }

    /// Basic auth for Grafana when `--grafana-user` is given.
    pub fn grafana_credentials(&self) -> Credentials {
        match &self.args.grafana_user {
            Some(user) => Credentials::Basic {
                user: user.clone(),
                password: self.args.grafana_password.as_ref().map(|secret| secret.0.clone()),
            },
            None => Credentials::None,
        }
    }

    /// Where to ask Tempo: directly when its URL is known, else through
    /// Grafana (unless Grafana is skipped).
    pub fn tempo_route(&self) -> TempoRoute {
        match &self.urls.tempo {
            Some(url) => TempoRoute::Direct(url.clone()),
            None if self.skips_component(Component::Grafana) => TempoRoute::Unavailable,
            None => TempoRoute::Grafana(format!(
                "{}/api/datasources/proxy/uid/{}",
                self.urls.grafana,
                defaults::TEMPO_DATASOURCE_UID
            )),
        }
    }

    /// `GET <tempo><path>` by `route`. An answer of Tempo's, whatever its
    /// status; through Grafana, the statuses that are Grafana's own (it
    /// refused, has no such data source, cannot reach Tempo) are failures
    /// with a hint about the relay.
    pub async fn tempo_get(&self, route: &TempoRoute, path: &str, query: &[(&str, &str)]) -> Result<Answer, Failure> {
        match route {
            TempoRoute::Direct(base) => {
                let url = format!("{base}{path}");
                self.http
                    .get(&url, query, Auth::None)
                    .await
                    .map_err(|e| Failure::new(e.to_string(), Stack::unreachable_hint("tempo")).unreachable())
            }
            TempoRoute::Grafana(base) => {
                let url = format!("{base}{path}");
                let creds = self.grafana_credentials();
                let answer = self.http.get(&url, query, creds.auth()).await.map_err(|e| {
                    Failure::new(
                        e.to_string(),
                        format!(
                            "Tempo is not published on the host, the doctor asks it through Grafana: {}; \
                             or run inside the network: {COMPOSE_RUN}",
                            Stack::unreachable_hint("grafana")
                        ),
                    )
                    .unreachable()
                })?;
                match answer.status {
                    401 | 403 => Err(Failure::new(
                        format!("Grafana refused to relay to Tempo: {}", answer.unexpected()),
                        format!("{GRAFANA_AUTH_HINT}; or run inside the network: {COMPOSE_RUN}"),
                    )),
                    404 => Err(Failure::new(
                        answer.unexpected(),
                        format!(
                            "Grafana relays to Tempo through its data source uid {}: is it provisioned? \
                             stack/grafana/provisioning/datasources/datasources.yaml; \
                             docker compose logs grafana | grep -i provisioning",
                            defaults::TEMPO_DATASOURCE_UID
                        ),
                    )),
                    502 | 504 => Err(Failure::new(
                        format!("Grafana cannot reach Tempo: {}", answer.unexpected()),
                        Stack::unreachable_hint("tempo"),
                    )
                    .unreachable()),
                    _ => Ok(answer),
                }
            }
            TempoRoute::Unavailable => Err(Failure::new(
                "Tempo cannot be asked: no --tempo URL and Grafana is skipped",
                format!("give --tempo URL, or run inside the network: {COMPOSE_RUN}"),
            )),
        }
    }

    /// Whether the admin URL is the host default nobody chose: compose does
    /// not publish the admin port, so from the host it cannot answer.
    pub fn admin_is_host_default(&self) -> bool {
        self.args.admin.is_none() && !self.args.compose
    }

    /// The label `label` of each series of an instant query's vector result
    /// (https://prometheus.io/docs/prometheus/latest/querying/api/#instant-queries).
    pub async fn prometheus_query_labels(&self, promql: &str, label: &str) -> Result<Vec<String>, Failure> {
        let data: QueryData = self.prometheus_api("/api/v1/query", &[("query", promql)]).await?;
        Ok(data
            .result
            .iter()
            .map(|s| s.metric.get(label).cloned().unwrap_or_default())
            .collect())
    }

    /// The router's `/status`, asked once.
    pub async fn router_status(&self) -> Result<RouterStatus, Failure> {
        self.router_status
            .get_or_init(|| self.fetch_router_status())
            .await
            .clone()
    }

    async fn fetch_router_status(&self) -> Result<RouterStatus, Failure> {
        let url = format!("{}/status", self.urls.admin);
        let token = std::env::var("VIGIE_ADMIN_TOKEN").ok().filter(|t| !t.trim().is_empty());
        let auth = token.as_deref().map_or(Auth::None, |t| Auth::Bearer(t.trim()));
        let answer = self.http.get(&url, &[], auth).await.map_err(|e| {
            let mut hint = Stack::unreachable_hint("router");
            if !self.args.compose && self.args.admin.is_none() {
                hint.push_str(
                    "; compose does not publish the admin port 8081 on the host: \
                     run `docker compose exec router vigie doctor --compose`",
                );
            }
            Failure::new(e.to_string(), hint).unreachable()
        })?;
        match answer.status {
            200 => answer
                .json()
                .map_err(|e| Failure::new(e.to_string(), "is this the vigie router's admin API?")),
            401 | 403 => Err(Failure::new(
                format!("the admin API refused the request: {}", answer.unexpected()),
                "set VIGIE_ADMIN_TOKEN to the router's admin token",
            )),
            _ => Err(Failure::new(
                answer.unexpected(),
                "docker compose logs router --tail 50",
            )),
        }
    }

    /// Prometheus' active targets, asked once.
    pub async fn targets(&self) -> Result<Vec<Target>, Failure> {
        self.targets
            .get_or_init(|| async {
                let data: TargetsData = self.prometheus_api("/api/v1/targets", &[("state", "active")]).await?;
                Ok(data.active_targets)
            })
            .await
            .clone()
    }

    /// The colors of the backend targets Prometheus labels `role="active"`.
    pub async fn prometheus_active_colors(&self) -> Result<Vec<String>, Failure> {
        let targets = self.targets().await?;
        Ok(targets
            .iter()
            .filter(|t| t.job() == "backend" && t.label("role") == "active")
            .map(|t| t.label("color").to_owned())
            .collect())
    }

    /// The active color: the router's word, else what Prometheus labels
    /// active (when the router cannot be asked).
    pub async fn active_color(&self) -> Result<String, Failure> {
        let router = if self.skips(CheckId::RouterActive) {
            None
        } else {
            Some(self.router_status().await)
        };
        match router {
            Some(Ok(status)) => Ok(status.active.to_string()),
            router => {
                let why = match router {
                    Some(Err(failure)) => format!("the router cannot tell ({})", failure.detail),
                    _ => "the router check is skipped".to_owned(),
                };
                if self.skips_component(Component::Prometheus) {
                    return Err(Failure::new(
                        format!("cannot tell the active color: {why}, Prometheus is skipped"),
                        "run without --skip router, or fix the router check first",
                    ));
                }
                match self.prometheus_active_colors().await {
                    Ok(colors) if colors.len() == 1 => Ok(colors[0].clone()),
                    Ok(colors) => Err(Failure::new(
                        format!(
                            "cannot tell the active color: {why}, and Prometheus has {} backend targets with role=\"active\"",
                            colors.len()
                        ),
                        "fix the router active color check first",
                    )),
                    Err(failure) => Err(Failure::new(
                        format!("cannot tell the active color: {why}, nor Prometheus ({})", failure.detail),
                        "fix the router and Prometheus checks first",
                    )),
                }
            }
        }
    }
}
