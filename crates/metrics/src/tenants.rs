//! The cap on tenant label cardinality.
//!
//! The first `max` distinct tenants seen get their own `tenant_id` label value; later ones
//! share [`OVERFLOW_TENANT`], so a flood of new tenant ids cannot blow up the time-series
//! database. `max` 0 puts every tenant under the overflow value.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use beamline_core::TenantId;

/// The label value shared by tenants past the cap.
pub const OVERFLOW_TENANT: &str = "_overflow";

/// Maps tenants to label values under a cardinality cap.
#[derive(Debug)]
pub struct TenantLabels {
    max: usize,
    seen: RwLock<HashSet<Arc<str>>>,
}

impl TenantLabels {
    /// Labels for at most `max` distinct tenants.
    pub fn new(max: usize) -> Self {
        TenantLabels {
            max,
            seen: RwLock::new(HashSet::new()),
        }
    }

    /// The label value for `tenant`.
    pub fn label(&self, tenant: &TenantId) -> String {
        let name = tenant.as_str();
        {
            let seen = self.seen.read().unwrap_or_else(|p| p.into_inner());
            if seen.contains(name) {
                return name.to_owned();
            }
            if seen.len() >= self.max {
                return OVERFLOW_TENANT.to_owned();
            }
        }
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        if seen.len() < self.max || seen.contains(name) {
            seen.insert(Arc::from(name));
            name.to_owned()
        } else {
            OVERFLOW_TENANT.to_owned()
        }
    }

    /// Forgets every tenant.
    pub fn reset_all(&self) {
        self.seen.write().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_past_the_cap_share_the_overflow_label() {
        let labels = TenantLabels::new(2);
        let t = |s: &str| TenantId::try_new(s).unwrap();
        assert_eq!(labels.label(&t("a")), "a");
        assert_eq!(labels.label(&t("b")), "b");
        assert_eq!(labels.label(&t("c")), OVERFLOW_TENANT);
        assert_eq!(labels.label(&t("a")), "a");
    }
}
