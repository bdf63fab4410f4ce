//! Tenant policies (`beamline_core::policy`): any UTF-8 text through the JSON/TOML parser
//! and validation over the default breaker and retry configuration; then, for a valid
//! policy, the routing decision with breaker verdicts and a random number drawn from the
//! input. Checked: nothing panics; a decision never picks a provider whose breaker
//! rejects, unless it is `degraded`; at most `MAX_FALLBACK_HOPS` hops; a valid policy
//! survives a JSON round trip.
#![no_main]

use beamline_core::ProviderId;
use beamline_core::breaker::BreakerConfig;
use beamline_core::policy::{MAX_FALLBACK_HOPS, RouteReason, TenantPolicyConfig, decide};
use beamline_core::retry::RetryConfig;
use libfuzzer_sys::fuzz_target;

/// FNV-1a, to map a provider id to a bit of the admission mask.
fn bit(p: &ProviderId) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in p.as_str().bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h % 64
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let (head, text) = data.split_at(16);
    let mut word = [0u8; 8];
    word.copy_from_slice(&head[..8]);
    let mask = u64::from_le_bytes(word);
    word.copy_from_slice(&head[8..]);
    let random = u64::from_le_bytes(word);
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(config) = TenantPolicyConfig::parse(text) else {
        return;
    };
    let Ok(policy) = config.validate(&BreakerConfig::default(), &RetryConfig::default()) else {
        return;
    };
    let json = serde_json::to_string(policy.config()).expect("a policy serializes");
    let again = TenantPolicyConfig::parse(&json).expect("a serialized policy parses");
    assert_eq!(&again, policy.config(), "{json}");

    let admits = |p: &ProviderId| mask & (1 << bit(p)) != 0;
    let providers = &policy.config().providers;
    let pick = |shift: u32| {
        let i = (random >> shift) as usize % (providers.len() + 1);
        providers.get(i).map(|p| &p.id)
    };
    let explicit = pick(8);
    let sticky = pick(16);
    let d = decide(&policy, explicit, sticky, admits, random);
    assert!(d.hops <= MAX_FALLBACK_HOPS, "{d:?}");
    match d.reason {
        RouteReason::Degraded => {}
        _ => assert!(admits(&d.provider), "picked a rejecting provider: {d:?}"),
    }
    if d.reason == RouteReason::Explicit {
        assert_eq!(Some(&d.provider), explicit);
    }
});
