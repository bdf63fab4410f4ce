//! The scenario engine: runs one [`ScenarioSpec`] against a router and checks it.
//!
//! A run sets up the scenario's keys (tenants × providers, unique per run), puts its
//! tenant policy, then for each phase sets the phase's faults, waits, drives the load,
//! waits, and clears the faults. Afterwards it reads the router's transition journal, the
//! broker-side attempt journal, `/metrics` and the broker's read-back, and checks:
//! - the generic R10 properties ([`crate::checks`]), on every scenario;
//! - the file's expectations (`[expect]`, `[[expect.ranges]]`).
//!
//! Every failed expectation is collected; none stops the others. Only a router that cannot
//! be reached (or answers the admin API wrongly) ends a scenario early, as an error.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use beamline_core::Clock;
use beamline_core::breaker::BreakerConfig;
use beamline_core::retry::RetryConfig;
use beamline_metrics::Snapshot;
use beamline_server::clock::TokioClock;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};

use crate::Profile;
use crate::api;
use crate::checks::{self, Collected, FaultWindow, PhaseWindow};
use crate::client::{ClientError, RouterClient};
use crate::load::{LoadSpec, RequestRecord, RouterTime, drive};
use crate::report::{AssertionKind, ScenarioReport};
use crate::spec::{Feature, PhaseSpec, ScenarioSpec, WaitSpec, WaitUntil};

/// How often waits poll the router.
const POLL: Duration = Duration::from_millis(10);
/// Longest wait for the outbox to deliver queued messages before the read-back.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// What every scenario gets.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The router.
    pub client: &'a RouterClient,
    /// Load size.
    pub profile: &'a Profile,
    /// Unique per run: keeps keys and message ids apart across runs on one router.
    pub run_id: String,
    /// Index of the scenario in the run (message ids).
    pub index: usize,
    /// The router's breaker settings.
    pub breaker: BreakerConfig,
    /// The router's retry settings.
    pub retry: RetryConfig,
    /// `embedded` or `nats`.
    pub broker: &'static str,
    /// Progress display.
    pub progress: &'a MultiProgress,
    /// The router's clock.
    pub time: RouterTime,
    /// Settings to give the scenario's tenants through tenant policies (a running router,
    /// whose own settings are not the scenario's).
    pub tenant_settings: Option<TenantSettings>,
}

/// A scenario's breaker, retry and degraded settings, applied per tenant.
#[derive(Clone, Debug)]
pub struct TenantSettings {
    /// Breaker keys.
    pub breaker: BreakerConfig,
    /// Retry keys.
    pub retry: RetryConfig,
    /// Degraded mode (when the file's policy does not name one).
    pub degraded_mode: beamline_core::policy::DegradedMode,
}

/// The tenant policy to put for every tenant: the file's (providers named by their ids),
/// and, for a running router, the scenario's settings as the policy's overrides.
fn tenant_policy(
    spec: &ScenarioSpec,
    keys: &Keys,
    settings: Option<&TenantSettings>,
) -> Option<Value> {
    let mut policy = match (&spec.policy, settings) {
        (None, None) => return None,
        (Some(p), _) => serde_json::to_value(p).unwrap_or(Value::Null),
        (None, Some(_)) => {
            let providers: Vec<Value> = keys
                .provider_ids()
                .into_iter()
                .map(|id| json!({"id": id, "weight": 1}))
                .collect();
            json!({ "providers": providers })
        }
    };
    substitute_providers(&mut policy, keys);
    if let Some(s) = settings {
        policy["circuit_breaker"] = serde_json::to_value(&s.breaker).unwrap_or(Value::Null);
        policy["retry"] = serde_json::to_value(&s.retry).unwrap_or(Value::Null);
        if policy.get("degraded_mode").is_none() || spec.router.degraded_mode.is_some() {
            policy["degraded_mode"] = serde_json::to_value(s.degraded_mode).unwrap_or(Value::Null);
        }
    }
    Some(policy)
}

/// The scenario's keys: tenants and providers, made unique for the run.
#[derive(Clone, Debug)]
pub struct Keys {
    /// Tenant ids.
    pub tenants: Vec<String>,
    /// (logical name, provider id).
    pub providers: Vec<(String, String)>,
}

impl Keys {
    fn new(spec: &ScenarioSpec, run_id: &str) -> Self {
        let stem: String = spec
            .name
            .split('_')
            .filter_map(|w| w.chars().next())
            .collect();
        Keys {
            tenants: (0..spec.keys.tenants)
                .map(|i| format!("{stem}-{run_id}-t{i}"))
                .collect(),
            providers: spec
                .keys
                .providers
                .iter()
                .map(|p| (p.clone(), format!("{stem}-{run_id}-{p}")))
                .collect(),
        }
    }

    /// The provider id of a logical name (the name itself if unknown).
    pub fn provider(&self, name: &str) -> String {
        self.providers
            .iter()
            .find(|(n, _)| n == name)
            .map_or_else(|| name.to_owned(), |(_, id)| id.clone())
    }

    /// The logical name of a provider id.
    pub fn provider_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.providers
            .iter()
            .find(|(_, i)| i == id)
            .map_or(id, |(n, _)| n.as_str())
    }

    /// Every provider id.
    pub fn provider_ids(&self) -> Vec<String> {
        self.providers.iter().map(|(_, id)| id.clone()).collect()
    }

    /// Short display of a key: `t3 / main`.
    pub fn short(&self, tenant: &str, provider: &str) -> String {
        let t = tenant.rsplit('-').next().unwrap_or(tenant);
        format!("{t} / {}", self.provider_name(provider))
    }

    fn first_provider(&self) -> String {
        self.providers
            .first()
            .map(|(_, id)| id.clone())
            .unwrap_or_default()
    }
}

fn bar(progress: &MultiProgress, scenario: &str, phase: &str) -> ProgressBar {
    let bar = progress.add(ProgressBar::new(0));
    let style = ProgressStyle::with_template("{prefix:>28} {msg:<14} [{bar:30}] {pos}/{len}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_prefix(scenario.to_owned());
    bar.set_message(phase.to_owned());
    bar
}

async fn snapshot(client: &RouterClient) -> Result<Snapshot, ClientError> {
    let text = client.metrics().await?;
    Snapshot::parse(&text).map_err(|e| ClientError::Decode {
        path: "/metrics".into(),
        detail: e.to_string(),
    })
}

/// Whether every (or any) tenant's key of `provider` is in `state`, or (with `since_us`)
/// has entered it at or after that router time. A state can be left again between two
/// polls (with the outbox on, the drainer's probes close a half-open breaker within
/// milliseconds), so a wait for it reads the transition journal as well as the states.
async fn keys_in_state(
    client: &RouterClient,
    tenants: &[String],
    provider: &str,
    state: WaitUntil,
    any: bool,
    since_us: Option<u64>,
) -> Result<bool, ClientError> {
    if state == WaitUntil::OutboxEmpty {
        let view = api::outbox(client).await?;
        return Ok(api::outbox_depth(&view, tenants, &[provider.to_owned()]) == 0);
    }
    let states = api::breaker_states(client, provider).await?;
    let wanted = state.as_str();
    let entered: HashSet<String> = match since_us {
        Some(since) => client
            .transitions(since)
            .await?
            .into_iter()
            .filter(|t| t.provider_id == provider && t.to == wanted)
            .map(|t| t.tenant_id)
            .collect(),
        None => HashSet::new(),
    };
    let is = |t: &String| {
        states.get(t).map_or("closed", String::as_str) == wanted || entered.contains(t)
    };
    Ok(if any {
        tenants.iter().any(is)
    } else {
        tenants.iter().all(is)
    })
}

/// Runs one scenario. A failed expectation is in the report; only a router that cannot
/// be talked to is an error.
pub async fn execute(spec: &ScenarioSpec, ctx: &Ctx<'_>) -> Result<ScenarioReport, ClientError> {
    let clock = TokioClock::new();
    let started = clock.now();
    let client = ctx.client;
    let mut report = ScenarioReport::new(&spec.name, &spec.description);
    report.config = json!({"breaker": ctx.breaker, "retry": ctx.retry});
    let keys = Keys::new(spec, &ctx.run_id);

    // Features: a router without them fails the scenario, clearly.
    let mut missing = false;
    for feature in &spec.needs.features {
        let (present, probe) = match feature {
            Feature::Policies => {
                let path = format!("/admin/policies/{}", keys.tenants[0]);
                (
                    api::has_route(client, Method::GET, &path, None).await?,
                    format!("GET {path}"),
                )
            }
            Feature::Outbox => {
                let present = api::has_route(client, Method::GET, "/admin/outbox", None).await?;
                let enabled =
                    present && api::outbox(client).await?["enabled"].as_bool() != Some(false);
                (
                    enabled,
                    format!(
                        "GET /admin/outbox: {}",
                        match (present, enabled) {
                            (false, _) => "404 not_found (feature not in this router)",
                            (true, false) => "enabled: false (router has no outbox directory)",
                            (true, true) => "enabled",
                        }
                    ),
                )
            }
        };
        report.check(
            AssertionKind::Setup,
            &format!("router supports {}", feature.as_str()),
            present,
            if present || matches!(feature, Feature::Outbox) {
                probe
            } else {
                format!("{probe}: 404 not_found (feature not in this router)")
            },
            "present (and enabled)",
        );
        missing |= !present;
    }
    if missing {
        report.duration = clock.now().since(started);
        report.finish();
        return Ok(report);
    }

    let since = client.now_us().await?;
    let before = snapshot(client).await?;

    if let Some(value) = tenant_policy(spec, &keys, ctx.tenant_settings.as_ref()) {
        let mut failures = Vec::new();
        for tenant in &keys.tenants {
            if let Err(e) = api::put_policy(client, tenant, value.clone()).await {
                failures.push(e.to_string());
            }
        }
        report.check(
            AssertionKind::Setup,
            "tenant policy accepted",
            failures.is_empty(),
            failures
                .first()
                .cloned()
                .unwrap_or_else(|| "accepted".into()),
            "PUT /admin/policies/{tenant} answers 200",
        );
        if !failures.is_empty() {
            report.duration = clock.now().since(started);
            report.finish();
            return Ok(report);
        }
    }

    let mut records: Vec<RequestRecord> = Vec::new();
    let mut phases: Vec<PhaseWindow> = Vec::new();
    let mut faults: Vec<FaultWindow> = Vec::new();
    let mut load_time = Duration::ZERO;
    for (index, phase) in spec.phases.iter().enumerate() {
        let start_us = ctx.time.now_us();
        let mut set: Vec<String> = Vec::new();
        for f in &phase.faults {
            let provider = keys.provider(&f.provider);
            let tenant = f.tenant.map(|t| keys.tenants[t].clone());
            let fault = serde_json::to_value(&f.fault).unwrap_or(Value::Null);
            client
                .set_fault(&provider, tenant.as_deref(), fault.clone())
                .await?;
            faults.push(FaultWindow {
                phase: index,
                provider,
                tenant,
                fault: f.fault.clone(),
                label: format!("{}: {}", f.provider, fault_label(&fault)),
                from_us: ctx.time.now_us(),
                to_us: 0,
            });
            set.push(keys.provider(&f.provider));
        }
        if let Some(wait) = &phase.wait_before {
            wait_for(ctx, &keys, phase, wait, start_us, "before", &mut report).await?;
        }
        let load_started = clock.now();
        if phase.has_load() {
            let load = load_spec(spec, phase, ctx, &keys);
            let progress = bar(ctx.progress, &spec.name, &phase.name);
            let stop = Arc::new(AtomicBool::new(false));
            let watcher = phase.stop_when.map(|state| {
                let client = client.clone();
                let tenants = keys.tenants.clone();
                let provider = keys.first_provider();
                let stop = Arc::clone(&stop);
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        if let Ok(true) =
                            keys_in_state(&client, &tenants, &provider, state, false, None).await
                        {
                            stop.store(true, Ordering::SeqCst);
                        }
                        tokio::time::sleep(POLL).await;
                    }
                })
            });
            let sent = drive(client, ctx.time, index, &load, &progress, Arc::clone(&stop)).await;
            stop.store(true, Ordering::SeqCst);
            if let Some(w) = watcher {
                let _ = w.await;
            }
            progress.finish();
            records.extend(sent);
        }
        load_time += clock.now().since(load_started);
        if let Some(wait) = &phase.wait_after {
            wait_for(ctx, &keys, phase, wait, start_us, "after", &mut report).await?;
        }
        set.sort();
        set.dedup();
        for provider in &set {
            client.clear_faults(Some(provider)).await?;
        }
        let end_us = ctx.time.now_us();
        for f in faults.iter_mut().filter(|f| f.phase == index) {
            f.to_us = end_us;
        }
        phases.push(PhaseWindow {
            name: phase.name.clone(),
            from_us: start_us,
            to_us: end_us,
        });
    }

    // Messages answered 202 are delivered later: give the outbox time to drain before the
    // read-back, and say how long it took.
    let queued = records.iter().filter(|r| r.response.status == 202).count();
    if queued > 0 {
        let waited = clock.now();
        let mut drained = false;
        while clock.now().since(waited) < DRAIN_TIMEOUT {
            if keys_all_drained(client, &keys).await? {
                drained = true;
                break;
            }
            tokio::time::sleep(POLL * 5).await;
        }
        report.check(
            AssertionKind::Setup,
            "outbox drained before the read-back",
            drained,
            format!(
                "{queued} queued; {} after {:.0} ms",
                if drained { "drained" } else { "not drained" },
                clock.now().since(waited).as_secs_f64() * 1e3
            ),
            format!("depth 0 within {} s", DRAIN_TIMEOUT.as_secs()),
        );
    }

    let end_us = ctx.time.now_us();
    let after = snapshot(client).await?;
    let transitions = client.transitions(since).await?;
    let attempts = client.attempts(since).await?;
    let mut stored = HashMap::new();
    for id in keys.provider_ids() {
        let ids = client
            .stored_message_ids(&format!("beamline.provider.{id}"))
            .await?;
        stored.insert(id, ids);
    }
    let tenants = &keys.tenants;
    let providers = keys.provider_ids();
    let in_scope =
        |t: &str, p: &str| tenants.iter().any(|x| x == t) && providers.iter().any(|x| x == p);
    let collected = Collected {
        spec,
        keys: &keys,
        breaker: &ctx.breaker,
        retry: &ctx.retry,
        broker: ctx.broker,
        start_us: since,
        end_us,
        phases,
        faults,
        records,
        transitions: transitions
            .into_iter()
            .filter(|t| in_scope(&t.tenant_id, &t.provider_id))
            .collect(),
        attempts: attempts
            .into_iter()
            .filter(|a| in_scope(&a.tenant_id, &a.provider_id))
            .collect(),
        stored,
        before,
        after,
    };
    checks::evaluate(&collected, &mut report);
    report.requests = collected.records.len();
    report.load_time = load_time;
    if !load_time.is_zero() {
        report.number(
            "load",
            format!(
                "{} requests in {:.2} s of load = {:.0} req/s",
                report.requests,
                load_time.as_secs_f64(),
                report.requests as f64 / load_time.as_secs_f64()
            ),
        );
    }
    report.duration = clock.now().since(started);
    report.finish();
    Ok(report)
}

async fn keys_all_drained(client: &RouterClient, keys: &Keys) -> Result<bool, ClientError> {
    for p in keys.provider_ids() {
        if !keys_in_state(
            client,
            &keys.tenants,
            &p,
            WaitUntil::OutboxEmpty,
            false,
            None,
        )
        .await?
        {
            return Ok(false);
        }
    }
    Ok(true)
}

fn load_spec(spec: &ScenarioSpec, phase: &PhaseSpec, ctx: &Ctx<'_>, keys: &Keys) -> LoadSpec {
    let clients = ((ctx.profile.clients as f64 * phase.clients).ceil() as usize)
        .min(phase.max_clients.unwrap_or(usize::MAX))
        .max(1);
    let requests = phase.requests_per_client.or_else(|| {
        phase
            .requests
            .map(|f| ((ctx.profile.requests as f64 * f).ceil() as usize).max(1))
    });
    LoadSpec {
        clients,
        requests,
        duration: phase.duration_ms.map(Duration::from_millis),
        tenants: keys.tenants.clone(),
        provider: spec.phase_provider(phase).map(|p| keys.provider(p)),
        id_prefix: format!("{}-s{}-{}", ctx.run_id, ctx.index, phase.name),
        pause: Duration::from_millis(phase.pause_ms),
    }
}

/// Waits as a phase asks; the outcome is a setup assertion (a wait that times out fails
/// the scenario but the run goes on, so every other expectation is still reported). A
/// breaker state counts as reached when the key is in it or entered it since the phase
/// began (`since_us`, router time).
async fn wait_for(
    ctx: &Ctx<'_>,
    keys: &Keys,
    phase: &PhaseSpec,
    wait: &WaitSpec,
    since_us: u64,
    when: &str,
    report: &mut ScenarioReport,
) -> Result<(), ClientError> {
    let provider = wait
        .provider
        .as_deref()
        .map_or_else(|| keys.first_provider(), |p| keys.provider(p));
    let timeout = Duration::from_millis(wait.timeout_ms.unwrap_or_else(|| match wait.until {
        WaitUntil::HalfOpen => {
            let (_, max_us) = crate::analysis::open_period_bounds_us(&ctx.breaker, 1);
            max_us / 1000 + 2000
        }
        _ => 5000,
    }));
    let clock = TokioClock::new();
    let started = clock.now();
    let mut reached = false;
    loop {
        let in_state = keys_in_state(
            ctx.client,
            &keys.tenants,
            &provider,
            wait.until,
            wait.any,
            Some(since_us),
        )
        .await?;
        if in_state {
            reached = true;
            break;
        }
        if clock.now().since(started) >= timeout {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let took = clock.now().since(started);
    let who = if wait.any { "any key" } else { "every key" };
    report.check(
        AssertionKind::Setup,
        &format!(
            "{}: {who} of {} {} ({when} the load)",
            phase.name,
            keys.provider_name(&provider),
            wait.until.as_str()
        ),
        reached,
        format!(
            "{} after {:.0} ms",
            if reached { "reached" } else { "not reached" },
            took.as_secs_f64() * 1e3
        ),
        format!("within {} ms", timeout.as_millis()),
    );
    Ok(())
}

/// Replaces every string equal to a logical provider name with the provider's id.
fn substitute_providers(value: &mut Value, keys: &Keys) {
    match value {
        Value::String(s) => {
            if let Some((_, id)) = keys.providers.iter().find(|(n, _)| n == s) {
                *s = id.clone();
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| substitute_providers(v, keys)),
        Value::Object(o) => o.values_mut().for_each(|v| substitute_providers(v, keys)),
        _ => {}
    }
}

fn fault_label(fault: &Value) -> String {
    let kind = fault["type"].as_str().unwrap_or("?");
    match kind {
        "error" => format!("error {}", fault["kind"].as_str().unwrap_or("?")),
        "delay" => format!("delay {} ms", fault["ms"]),
        "intermittent" => format!(
            "{:.0}% {}",
            fault["probability"].as_f64().unwrap_or(0.0) * 100.0,
            fault_label(&fault["fault"])
        ),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_unique_and_valid_ids() {
        let spec = crate::spec::builtin()
            .unwrap()
            .into_iter()
            .find(|s| s.name == "thundering_herd_recovery")
            .unwrap();
        let keys = Keys::new(&spec, "0123abcd");
        for id in keys.tenants.iter().chain(&keys.provider_ids()) {
            assert!(beamline_core::TenantId::try_new(id).is_ok(), "{id}");
        }
        assert_eq!(
            keys.short(&keys.tenants[3], &keys.provider("main")),
            "t3 / main"
        );
    }

    #[test]
    fn policies_name_providers_by_their_ids() {
        let spec = crate::spec::builtin().unwrap().into_iter().next().unwrap();
        let keys = Keys::new(&spec, "r");
        let mut v = json!({"providers": [{"id": "main", "weight": 1}], "degraded_mode": "outbox"});
        substitute_providers(&mut v, &keys);
        assert_eq!(v["providers"][0]["id"], keys.provider("main"));
        assert_eq!(v["degraded_mode"], "outbox");
    }

    #[test]
    fn fault_labels_read_well() {
        let f = json!({"type": "intermittent", "probability": 0.6, "fault": {"type": "error", "kind": "broker_unavailable"}});
        assert_eq!(fault_label(&f), "60% error broker_unavailable");
    }
}
