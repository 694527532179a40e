//! [`RuleCatalog`] on the `state` tree: business rules' enablement per organization and the objects
//! each plugin has processed.
//!
//! | key | value | what |
//! | --- | --- | --- |
//! | `W` org rule | JSON `{rule, enabled}` | an organization's override of a rule's enabled flag |
//! | `Y` org plugin type key | empty | a completed task of the plugin had the object as a target |
//!
//! A `requires` lookup for given objects is one point lookup each; a full pass scans the
//! `(org, plugin)` prefix.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use kat_core::Result;
use kat_core::object::{NaturalKey, ObjectType};
use kat_core::org::OrgCode;
use kat_core::rules::RuleCatalog;
use kat_core::task::ObjectRef;

use crate::SledStore;
use crate::error::SledStoreError;
use crate::keys::{Key, take_str};

const T_RULE_OVERRIDE: u8 = b'W';
const T_PROCESSED: u8 = b'Y';

fn override_prefix(org: &OrgCode) -> Key {
    Key::new(T_RULE_OVERRIDE).str(org.as_str())
}

fn processed_prefix(org: &OrgCode, plugin_id: &str) -> Key {
    Key::new(T_PROCESSED).str(org.as_str()).str(plugin_id)
}

fn processed_key(org: &OrgCode, plugin_id: &str, r: &ObjectRef) -> Vec<u8> {
    processed_prefix(org, plugin_id)
        .str(r.object_type.as_str())
        .str(r.key.as_str())
        .into_vec()
}

/// An organization's override of a rule's enabled flag, as stored.
#[derive(serde::Serialize, serde::Deserialize)]
struct Override {
    rule: String,
    enabled: bool,
}

#[async_trait]
impl RuleCatalog for SledStore {
    async fn set_rule_override(
        &self,
        org: &OrgCode,
        rule: &str,
        enabled: Option<bool>,
    ) -> Result<()> {
        let k = override_prefix(org).str(rule).into_vec();
        let value = enabled.map(|enabled| Override {
            rule: rule.to_string(),
            enabled,
        });
        Ok(self.set_state_entry(k, "rule override", value).await?)
    }

    async fn rule_overrides(&self, org: &OrgCode) -> Result<BTreeMap<String, bool>> {
        let all: Vec<Override> = self
            .state_entries(override_prefix(org).into_vec(), "rule override")
            .await?;
        Ok(all.into_iter().map(|o| (o.rule, o.enabled)).collect())
    }

    async fn mark_processed(
        &self,
        org: &OrgCode,
        plugin_id: &str,
        objects: &[ObjectRef],
    ) -> Result<()> {
        if objects.is_empty() {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = objects
            .iter()
            .map(|r| processed_key(org, plugin_id, r))
            .collect();
        self.blocking(move |inner| {
            let mut batch = sled::Batch::default();
            for k in keys {
                batch.insert(k, &[][..]);
            }
            inner.state.apply_batch(batch)?;
            Ok(())
        })
        .await?;
        self.written().await?;
        Ok(())
    }

    async fn processed(
        &self,
        org: &OrgCode,
        plugin_id: &str,
        among: Option<&[ObjectRef]>,
    ) -> Result<BTreeSet<ObjectRef>> {
        let org = org.clone();
        let plugin_id = plugin_id.to_string();
        let among = among.map(<[ObjectRef]>::to_vec);
        Ok(self
            .blocking(move |inner| {
                let mut out = BTreeSet::new();
                match among {
                    Some(refs) => {
                        for r in refs {
                            if inner
                                .state
                                .contains_key(processed_key(&org, &plugin_id, &r))?
                            {
                                out.insert(r);
                            }
                        }
                    }
                    None => {
                        let prefix = processed_prefix(&org, &plugin_id).into_vec();
                        for e in inner.state.scan_prefix(&prefix) {
                            let (k, _) = e?;
                            let malformed = || SledStoreError::decode("processed key", "malformed");
                            let (ty, rest) = take_str(&k[prefix.len()..]).ok_or_else(malformed)?;
                            let (key, _) = take_str(rest).ok_or_else(malformed)?;
                            let object_type: ObjectType = ty
                                .parse()
                                .map_err(|e| SledStoreError::decode("processed key", e))?;
                            out.insert(ObjectRef {
                                object_type,
                                key: NaturalKey::from_escaped_components([key]),
                            });
                        }
                    }
                }
                Ok(out)
            })
            .await?)
    }

    async fn clear_rule_state(&self, org: &OrgCode) -> Result<()> {
        let prefixes = [
            override_prefix(org).into_vec(),
            Key::new(T_PROCESSED).str(org.as_str()).into_vec(),
        ];
        self.blocking(move |inner| {
            let mut batch = sled::Batch::default();
            for p in prefixes {
                for e in inner.state.scan_prefix(&p) {
                    batch.remove(e?.0);
                }
            }
            inner.state.apply_batch(batch)?;
            Ok(())
        })
        .await?;
        self.written().await?;
        Ok(())
    }
}
