//! What business rules keep in the task store: per-organization enablement overrides and which
//! objects each plugin has processed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use async_trait::async_trait;

use crate::Result;
use crate::org::OrgCode;
use crate::task::ObjectRef;

/// Rule enablement per organization (like [`crate::store::PluginCatalog`]'s overrides) and the
/// record of which objects a plugin has processed, for rules' `requires`.
#[async_trait]
pub trait RuleCatalog: Send + Sync + fmt::Debug {
    /// Set (`Some`) or clear (`None`) an organization's override of a rule's enabled flag. The rules
    /// file's `enabled` is the default for organizations without one.
    async fn set_rule_override(
        &self,
        org: &OrgCode,
        rule: &str,
        enabled: Option<bool>,
    ) -> Result<()>;

    /// An organization's rule overrides, by rule name.
    async fn rule_overrides(&self, org: &OrgCode) -> Result<BTreeMap<String, bool>>;

    /// Record that a completed task of `plugin_id` had `objects` as its targets.
    async fn mark_processed(
        &self,
        org: &OrgCode,
        plugin_id: &str,
        objects: &[ObjectRef],
    ) -> Result<()>;

    /// Of `among` (every object when `None`), those `plugin_id` has processed in `org`.
    async fn processed(
        &self,
        org: &OrgCode,
        plugin_id: &str,
        among: Option<&[ObjectRef]>,
    ) -> Result<BTreeSet<ObjectRef>>;

    /// Forget an organization's overrides and processed records (when it is deleted).
    async fn clear_rule_state(&self, org: &OrgCode) -> Result<()>;
}
