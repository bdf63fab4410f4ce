//! The scenarios: each drives load and faults through a router and checks the R10
//! behaviour from the outside (HTTP answers, the router's journals, `/metrics`).

use std::time::Duration;

use beamline_core::breaker::{BreakerConfig, State};
use beamline_core::retry::RetryConfig;
use beamline_metrics::{Snapshot, r10};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use crate::analysis::{attempts_in, of_key, periods};
use crate::client::{ClientError, RouterClient, TransitionRecord};
use crate::load::{LoadSpec, RequestRecord, drive, quantile};
use crate::report::ScenarioReport;

/// Attempts already admitted when a breaker opens may reach the broker just after the
/// opening instant (the admission and the broker-side journal entry are not atomic);
/// attempts within this grace after an opening are counted as in flight, not as leaks.
pub const OPENING_GRACE_US: u64 = 5_000;
/// p99 bound for fail-fast answers on the embedded broker.
pub const FAST_REJECTION_P99: Duration = Duration::from_millis(50);

/// What every scenario gets.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The router.
    pub client: &'a RouterClient,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests per client.
    pub requests: usize,
    /// Unique per run: keeps keys and message ids apart across runs on one router.
    pub run_id: String,
    /// The router's default breaker settings.
    pub breaker: BreakerConfig,
    /// The router's retry settings.
    pub retry: RetryConfig,
    /// Progress display.
    pub progress: MultiProgress,
}

impl Ctx<'_> {
    fn bar(&self, scenario: &str, phase: &str) -> ProgressBar {
        let bar = self.progress.add(ProgressBar::new(0));
        let style = ProgressStyle::with_template("{prefix:>32} {msg:<12} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style.progress_chars("=> "));
        bar.set_prefix(scenario.to_owned());
        bar.set_message(phase.to_owned());
        bar
    }

    fn spec(&self, tenant: &str, provider: &str, phase: &str, requests: usize) -> LoadSpec {
        LoadSpec {
            clients: self.clients,
            requests: requests.max(1),
            tenants: vec![tenant.to_owned()],
            provider: provider.to_owned(),
            id_prefix: format!("{}-{phase}", self.run_id),
            pause: Duration::ZERO,
        }
    }

    async fn phase(&self, scenario: &str, phase: &str, spec: &LoadSpec) -> Vec<RequestRecord> {
        let bar = self.bar(scenario, phase);
        let records = drive(self.client, spec, &bar).await;
        bar.finish();
        records
    }

    async fn snapshot(&self) -> Result<Snapshot, ClientError> {
        let text = self.client.metrics().await?;
        Snapshot::parse(&text).map_err(|e| ClientError::Decode {
            path: "/metrics".into(),
            detail: e.to_string(),
        })
    }

    /// Longest open period the breaker can pick for its first opening.
    fn max_first_open(&self) -> Duration {
        let ms = self.breaker.open_timeout_ms as f64 * (1.0 + self.breaker.open_timeout_jitter);
        Duration::from_millis(ms.ceil() as u64)
    }
}

fn count(records: &[RequestRecord], status: u16) -> usize {
    records
        .iter()
        .filter(|r| r.response.status == status)
        .count()
}

fn check_attempt_caps(report: &mut ScenarioReport, records: &[&RequestRecord], max_attempts: u32) {
    let worst = records
        .iter()
        .map(|r| r.response.attempts())
        .max()
        .unwrap_or(0);
    report.check(
        "attempts per request <= max_attempts",
        worst <= max_attempts,
        worst,
        max_attempts,
    );
}

/// Every message answered 200 is stored exactly once; no message is stored twice.
async fn check_stored_once(
    report: &mut ScenarioReport,
    client: &RouterClient,
    provider: &str,
    records: &[&RequestRecord],
) -> Result<(), ClientError> {
    let stored = client
        .stored_message_ids(&format!("beamline.provider.{provider}"))
        .await?;
    let mut counts = std::collections::HashMap::<&str, usize>::new();
    for id in &stored {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let acknowledged: Vec<&str> = records
        .iter()
        .filter(|r| r.response.status == 200)
        .map(|r| r.message_id.as_str())
        .collect();
    let missing = acknowledged
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .count();
    let duplicated = counts.values().filter(|n| **n > 1).count();
    report.check(
        "every acknowledged message stored exactly once",
        missing == 0 && duplicated == 0,
        format!(
            "{} acknowledged, {missing} missing, {duplicated} duplicated",
            acknowledged.len()
        ),
        "0 missing, 0 duplicated",
    );
    Ok(())
}

fn first_opening_after<'a>(
    transitions: &[&'a TransitionRecord],
    after_us: u64,
) -> Option<(usize, &'a TransitionRecord)> {
    transitions
        .iter()
        .enumerate()
        .find(|(_, t)| t.to == "open" && t.from == "closed" && t.at_us >= after_us)
        .map(|(i, t)| (i, *t))
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// `mass_failure_opens_breaker`: baseline traffic, then every publish fails.
pub async fn mass_failure_opens_breaker(ctx: &Ctx<'_>) -> Result<ScenarioReport, ClientError> {
    const NAME: &str = "mass_failure_opens_breaker";
    let mut report = ScenarioReport::new(
        NAME,
        "baseline traffic, then every publish fails: the breaker opens and sheds load",
    );
    let (tenant, provider) = (
        format!("mass-{}", ctx.run_id),
        format!("pmass-{}", ctx.run_id),
    );
    let client = ctx.client;
    let since = client.now_us().await?;

    let baseline = ctx
        .phase(
            NAME,
            "baseline",
            &ctx.spec(&tenant, &provider, "mass-base", ctx.requests / 2),
        )
        .await;
    report.check(
        "baseline requests published",
        count(&baseline, 200) == baseline.len(),
        format!("{}/{}", count(&baseline, 200), baseline.len()),
        "all 200",
    );

    let before = ctx.snapshot().await?;
    client
        .set_fault(
            &provider,
            None,
            json!({"type": "error", "kind": "broker_unavailable"}),
        )
        .await?;
    let fault_at = client.now_us().await?;
    let failing = ctx
        .phase(
            NAME,
            "all failing",
            &ctx.spec(&tenant, &provider, "mass-fail", ctx.requests),
        )
        .await;
    client.clear_faults(Some(&provider)).await?;
    let after = ctx.snapshot().await?;

    let all_transitions = client.transitions(since).await?;
    let transitions = of_key(&all_transitions, &tenant, &provider);
    let opening = first_opening_after(&transitions, fault_at);
    let reason = opening.map_or("none", |(_, t)| t.reason.as_str());
    report.check(
        "breaker opened",
        opening.is_some(),
        reason,
        "an opening after the fault",
    );
    let failure_reasons = [
        r10::FAILURE_THRESHOLD_EXCEEDED,
        r10::ERROR_RATE_THRESHOLD_EXCEEDED,
    ];
    report.check(
        "trigger_reason is a failure rule",
        failure_reasons.contains(&reason),
        reason,
        failure_reasons.join(" | "),
    );
    let metric_reason = r10::latest_trigger_reason(&after, &tenant, &provider).unwrap_or("none");
    report.check(
        "metrics report the same trigger_reason",
        metric_reason == reason,
        metric_reason,
        reason,
    );

    let attempts = client.attempts(since).await?;
    let open_periods: Vec<_> = periods(&transitions, "open")
        .into_iter()
        .filter(|p| p.start >= fault_at)
        .collect();
    let leaked: usize = open_periods
        .iter()
        .map(|p| attempts_in(&attempts, &tenant, &provider, p, OPENING_GRACE_US).len())
        .sum();
    report.check(
        "broker attempts while open",
        leaked == 0,
        leaked,
        format!(
            "0 (after a {} grace for in-flight admissions)",
            ms(OPENING_GRACE_US)
        ),
    );
    let max_probes = periods(&transitions, "half_open")
        .iter()
        .map(|p| attempts_in(&attempts, &tenant, &provider, p, 0).len())
        .max()
        .unwrap_or(0);
    let allowed = ctx.breaker.half_open_max_calls as usize;
    report.check(
        "probes per half-open episode",
        max_probes <= allowed,
        max_probes,
        format!("<= half_open_max_calls ({allowed})"),
    );

    let rejected: Vec<&RequestRecord> = failing
        .iter()
        .filter(|r| r.response.code() == "circuit_open")
        .collect();
    report.check(
        "clients answered 503 circuit_open",
        !rejected.is_empty(),
        format!("{}/{}", rejected.len(), failing.len()),
        "> 0",
    );
    let mut latencies: Vec<Duration> = rejected.iter().map(|r| r.response.latency).collect();
    let p99 = quantile(&mut latencies, 0.99);
    report.check(
        "fail-fast p99 latency",
        p99 <= FAST_REJECTION_P99,
        format!("{:.2} ms", p99.as_secs_f64() * 1000.0),
        format!("<= {} ms", FAST_REJECTION_P99.as_millis()),
    );
    let rejections = r10::delta(
        &before,
        &after,
        r10::BREAKER_REJECTIONS,
        &[("tenant_id", &tenant), ("provider_id", &provider)],
    );
    report.check(
        "rejections counted in metrics",
        rejections as usize >= rejected.len(),
        rejections,
        format!(">= {}", rejected.len()),
    );
    let all: Vec<&RequestRecord> = baseline.iter().chain(&failing).collect();
    check_attempt_caps(&mut report, &all, ctx.retry.max_attempts);
    check_stored_once(&mut report, client, &provider, &all).await?;

    let broker_attempts = attempts
        .iter()
        .filter(|a| a.provider_id == provider && a.at_us >= fault_at)
        .count();
    report.number("requests during the fault", failing.len());
    report.number("broker attempts during the fault", broker_attempts);
    if let Some((_, t)) = opening {
        report.number("fault to opening", ms(t.at_us.saturating_sub(fault_at)));
    }
    let mut lat: Vec<Duration> = failing.iter().map(|r| r.response.latency).collect();
    report.number(
        "latency p50 / p99 during the fault",
        format!(
            "{:.2} / {:.2} ms",
            quantile(&mut lat, 0.5).as_secs_f64() * 1e3,
            quantile(&mut lat, 0.99).as_secs_f64() * 1e3
        ),
    );
    Ok(report)
}

/// `recovery_after_failure`: the breaker opens, the fault is removed, the breaker
/// half-opens after its timeout, probes, closes, and traffic flows again.
pub async fn recovery_after_failure(ctx: &Ctx<'_>) -> Result<ScenarioReport, ClientError> {
    const NAME: &str = "recovery_after_failure";
    let mut report = ScenarioReport::new(
        NAME,
        "the fault is removed: half-open after the timeout, bounded probes, closed, traffic normal",
    );
    let (tenant, provider) = (
        format!("recover-{}", ctx.run_id),
        format!("precover-{}", ctx.run_id),
    );
    let client = ctx.client;
    let since = client.now_us().await?;
    let breaker_key = [
        ("tenant_id", tenant.as_str()),
        ("provider_id", provider.as_str()),
    ];

    client
        .set_fault(
            &provider,
            None,
            json!({"type": "error", "kind": "connection_refused"}),
        )
        .await?;
    let outage = ctx
        .phase(
            NAME,
            "outage",
            &ctx.spec(&tenant, &provider, "rec-outage", 3),
        )
        .await;
    let opened = r10::wait_for_state(
        client.scraper(),
        &tenant,
        &provider,
        State::Open,
        Duration::from_secs(5),
    )
    .await;
    report.check(
        "breaker opened during the outage",
        opened.is_ok(),
        if opened.is_ok() { "open" } else { "not open" },
        "open",
    );
    client.clear_faults(Some(&provider)).await?;
    let cleared_at = client.now_us().await?;

    let wait = ctx.max_first_open() + Duration::from_secs(2);
    let half_open =
        r10::wait_for_state(client.scraper(), &tenant, &provider, State::HalfOpen, wait).await;
    report.check(
        "breaker half-opened",
        half_open.is_ok(),
        if half_open.is_ok() {
            "half_open"
        } else {
            "not half_open"
        },
        format!("within {} ms", wait.as_millis()),
    );
    let recovery = ctx
        .phase(
            NAME,
            "recovery",
            &ctx.spec(&tenant, &provider, "rec-traffic", ctx.requests),
        )
        .await;
    let closed = r10::wait_for_state(
        client.scraper(),
        &tenant,
        &provider,
        State::Closed,
        Duration::from_secs(5),
    )
    .await;
    report.check(
        "breaker closed",
        closed.is_ok(),
        if closed.is_ok() {
            "closed"
        } else {
            "not closed"
        },
        "closed",
    );
    let normal = ctx
        .phase(
            NAME,
            "normal",
            &ctx.spec(&tenant, &provider, "rec-normal", ctx.requests / 2),
        )
        .await;
    report.check(
        "traffic after closing published",
        count(&normal, 200) == normal.len(),
        format!("{}/{}", count(&normal, 200), normal.len()),
        "all 200",
    );

    let all_transitions = client.transitions(since).await?;
    let transitions = of_key(&all_transitions, &tenant, &provider);
    let opening = first_opening_after(&transitions, since);
    let half =
        opening.and_then(|(i, _)| transitions.iter().skip(i + 1).find(|t| t.to == "half_open"));
    let (min_open, max_open) = (
        (ctx.breaker.open_timeout_ms as f64 * (1.0 - ctx.breaker.open_timeout_jitter)) as u64
            * 1000,
        ctx.max_first_open().as_micros() as u64,
    );
    let open_for = match (opening, half) {
        (Some((_, o)), Some(h)) => Some(h.at_us.saturating_sub(o.at_us)),
        _ => None,
    };
    report.check(
        "half-open after the open timeout",
        open_for.is_some_and(|d| d + 1000 >= min_open && d <= max_open + 1000),
        open_for.map_or("never".into(), ms),
        format!("{} ..= {}", ms(min_open), ms(max_open)),
    );
    let close = half.and_then(|h| {
        transitions
            .iter()
            .find(|t| t.at_us >= h.at_us && t.from == "half_open" && t.to == "closed")
    });
    report.check(
        "closed by probe successes",
        close.is_some_and(|c| c.reason == r10::SUCCESS_THRESHOLD_REACHED),
        close.map_or("no close", |c| c.reason.as_str()),
        r10::SUCCESS_THRESHOLD_REACHED,
    );
    let attempts = client.attempts(since).await?;
    let episodes = periods(&transitions, "half_open");
    let probes: Vec<usize> = episodes
        .iter()
        .map(|p| attempts_in(&attempts, &tenant, &provider, p, 0).len())
        .collect();
    let allowed = ctx.breaker.half_open_max_calls as usize;
    report.check(
        "probes per half-open episode",
        probes.iter().all(|n| *n <= allowed),
        format!("{probes:?}"),
        format!("each <= half_open_max_calls ({allowed})"),
    );
    let all: Vec<&RequestRecord> = outage.iter().chain(&recovery).chain(&normal).collect();
    check_attempt_caps(&mut report, &all, ctx.retry.max_attempts);
    check_stored_once(&mut report, client, &provider, &all).await?;

    if let Some(c) = close {
        report.number(
            "fault cleared to closed",
            ms(c.at_us.saturating_sub(cleared_at)),
        );
    }
    report.number(
        "recovery phase answers",
        format!(
            "{} published, {} rejected",
            count(&recovery, 200),
            count(&recovery, 503)
        ),
    );
    let after = ctx.snapshot().await?;
    report.number(
        "transitions of the key",
        r10::value(&after, r10::BREAKER_TRANSITIONS, &breaker_key),
    );
    Ok(report)
}
