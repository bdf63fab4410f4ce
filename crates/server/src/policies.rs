//! The policy store: validated tenant policies, loaded from a directory at startup and
//! changed through the admin API.
//!
//! Files are `<tenant_id>.json` or `<tenant_id>.toml`; a file that fails validation stops
//! the startup with an error naming the file and the key. With a directory configured,
//! `PUT` writes the file (to a temporary name, then renamed, so a crash never leaves half a
//! policy) and `DELETE` removes it, so a restart keeps what operators set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use beamline_core::TenantId;
use beamline_core::breaker::{BreakerConfig, ConfigError};
use beamline_core::policy::{TenantPolicy, TenantPolicyConfig};
use beamline_core::retry::RetryConfig;

/// Most policies (tenants with a policy).
pub const MAX_POLICIES: usize = 100_000;

/// Policy store failures.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy text does not parse.
    #[error("policy does not parse: {0}")]
    Parse(String),
    /// The policy breaks a rule.
    #[error("invalid policy: {0}")]
    Invalid(#[from] ConfigError),
    /// A policy file could not be read or written.
    #[error("{path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// What happened.
        detail: String,
    },
    /// Too many policies.
    #[error("at most {MAX_POLICIES} policies")]
    TooMany,
}

/// Tenant policies.
#[derive(Debug)]
pub struct PolicyStore {
    dir: Option<PathBuf>,
    breaker: BreakerConfig,
    retry: RetryConfig,
    policies: RwLock<BTreeMap<TenantId, Arc<TenantPolicy>>>,
}

impl PolicyStore {
    /// A store validating over the router's defaults, loading `dir` if given.
    pub fn open(
        dir: Option<&Path>,
        breaker: BreakerConfig,
        retry: RetryConfig,
    ) -> Result<Self, PolicyError> {
        let store = PolicyStore {
            dir: dir.map(Path::to_path_buf),
            breaker,
            retry,
            policies: RwLock::new(BTreeMap::new()),
        };
        if let Some(dir) = dir {
            let file_err = |detail: String| PolicyError::File {
                path: dir.to_path_buf(),
                detail,
            };
            std::fs::create_dir_all(dir).map_err(|e| file_err(e.to_string()))?;
            let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| file_err(e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("json" | "toml")
                    )
                })
                .collect();
            entries.sort();
            for path in entries {
                let fail = |detail: String| PolicyError::File {
                    path: path.clone(),
                    detail,
                };
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default();
                let tenant = TenantId::try_new(stem)
                    .map_err(|e| fail(format!("file name is not a tenant id: {e}")))?;
                let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
                let policy = store.validate(&text).map_err(|e| fail(e.to_string()))?;
                store.write_map().insert(tenant, Arc::new(policy));
            }
        }
        Ok(store)
    }

    fn write_map(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<TenantId, Arc<TenantPolicy>>> {
        self.policies.write().unwrap_or_else(|p| p.into_inner())
    }

    fn validate(&self, text: &str) -> Result<TenantPolicy, PolicyError> {
        let config = TenantPolicyConfig::parse(text).map_err(PolicyError::Parse)?;
        Ok(config.validate(&self.breaker, &self.retry)?)
    }

    /// The tenant's policy.
    pub fn get(&self, tenant: &TenantId) -> Option<Arc<TenantPolicy>> {
        self.policies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .cloned()
    }

    /// Every policy.
    pub fn list(&self) -> Vec<(TenantId, Arc<TenantPolicy>)> {
        self.policies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(t, p)| (t.clone(), p.clone()))
            .collect()
    }

    /// Validates and stores a policy (JSON or TOML text); persists it when a directory is
    /// configured.
    pub fn put(&self, tenant: &TenantId, text: &str) -> Result<Arc<TenantPolicy>, PolicyError> {
        let policy = Arc::new(self.validate(text)?);
        {
            let map = self.policies.read().unwrap_or_else(|p| p.into_inner());
            if !map.contains_key(tenant) && map.len() >= MAX_POLICIES {
                return Err(PolicyError::TooMany);
            }
        }
        if let Some(dir) = &self.dir {
            let json = serde_json::to_string_pretty(policy.config())
                .map_err(|e| PolicyError::Parse(e.to_string()))?;
            let path = dir.join(format!("{tenant}.json"));
            let tmp = dir.join(format!(".{tenant}.json.tmp"));
            let fail = |e: std::io::Error| PolicyError::File {
                path: path.clone(),
                detail: e.to_string(),
            };
            std::fs::write(&tmp, json).map_err(fail)?;
            std::fs::rename(&tmp, &path).map_err(fail)?;
            let _ = std::fs::remove_file(dir.join(format!("{tenant}.toml")));
        }
        self.write_map().insert(tenant.clone(), Arc::clone(&policy));
        Ok(policy)
    }

    /// Removes a policy; `false` when there was none.
    pub fn delete(&self, tenant: &TenantId) -> Result<bool, PolicyError> {
        if let Some(dir) = &self.dir {
            for ext in ["json", "toml"] {
                let path = dir.join(format!("{tenant}.{ext}"));
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(PolicyError::File {
                            path,
                            detail: e.to_string(),
                        });
                    }
                }
            }
        }
        Ok(self.write_map().remove(tenant).is_some())
    }

    /// Forgets every policy in memory (files are left alone), in place.
    pub fn reset_all(&self) {
        self.write_map().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_persist_in_the_directory_and_bad_files_name_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let t = TenantId::try_new("acme").unwrap();
        {
            let store = PolicyStore::open(
                Some(dir.path()),
                BreakerConfig::default(),
                RetryConfig::default(),
            )
            .unwrap();
            store.put(&t, r#"{"providers":[{"id":"a"}]}"#).unwrap();
            assert!(store.put(&t, r#"{"providers":[]}"#).is_err());
        }
        let store = PolicyStore::open(
            Some(dir.path()),
            BreakerConfig::default(),
            RetryConfig::default(),
        )
        .unwrap();
        assert!(store.get(&t).is_some());
        assert!(store.delete(&t).unwrap());
        std::fs::write(dir.path().join("bad.toml"), "providers = []\n").unwrap();
        let err = PolicyStore::open(
            Some(dir.path()),
            BreakerConfig::default(),
            RetryConfig::default(),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("bad.toml") && text.contains("providers"),
            "{text}"
        );
    }
}
