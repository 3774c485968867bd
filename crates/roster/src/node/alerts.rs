//! Alert rules and alerts as REST changes and reads them (`http/api/alerts.rs`
//! checks the request): stored in the database, each change an activity row
//! with who asked. Evaluation is `alerts/evaluator.rs`.

use serde_json::json;

use super::Node;
use crate::ids::TenantId;
use crate::store::{AlertFilter, StoreError, StoredAlert, StoredAlertRule};

impl Node {
    pub async fn alert_rules(&self, tenant: &TenantId) -> Result<Vec<StoredAlertRule>, StoreError> {
        self.store.alert_rules(Some(tenant.as_str())).await
    }

    /// Creates or replaces a rule.
    pub async fn save_alert_rule(
        &self,
        rule: &StoredAlertRule,
        actor: &str,
    ) -> Result<(), StoreError> {
        self.store.upsert_alert_rule(rule).await?;
        let Ok(tenant) = TenantId::parse(&rule.tenant) else {
            return Ok(());
        };
        self.record(
            &tenant,
            "alert_rule_saved",
            Some(actor),
            None,
            None,
            None,
            json!({"id": rule.id, "name": rule.name, "kind": rule.kind, "threshold": rule.threshold,
                   "scope": rule.scope, "target": rule.target, "enabled": rule.enabled}),
        );
        Ok(())
    }

    /// `false` if the tenant has no such rule.
    pub async fn delete_alert_rule(
        &self,
        tenant: &TenantId,
        id: &str,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let gone = self.store.delete_alert_rule(tenant.as_str(), id).await?;
        if gone {
            // Its firing alerts resolve now (the evaluator only sees rules
            // that exist); no webhook is sent for them.
            let now = crate::store::unix_ms(self.clock.wall_now());
            let firing = self
                .store
                .list_alerts(AlertFilter {
                    tenant: tenant.to_string(),
                    state: Some("firing".into()),
                    rule_id: Some(id.to_string()),
                    limit: crate::store::MAX_PAGE,
                    ..Default::default()
                })
                .await?;
            for a in firing {
                self.store
                    .resolve_alert(tenant.as_str(), &a.id, now)
                    .await?;
            }
            self.record(
                tenant,
                "alert_rule_deleted",
                Some(actor),
                None,
                None,
                None,
                json!({"id": id}),
            );
        }
        Ok(gone)
    }

    pub async fn alerts(&self, filter: AlertFilter) -> Result<Vec<StoredAlert>, StoreError> {
        self.store.list_alerts(filter).await
    }

    /// `None` if the tenant has no such alert.
    pub async fn ack_alert(
        &self,
        tenant: &TenantId,
        id: &str,
        actor: &str,
    ) -> Result<Option<StoredAlert>, StoreError> {
        let now = crate::store::unix_ms(self.clock.wall_now());
        let a = self
            .store
            .ack_alert(tenant.as_str(), id, now, actor)
            .await?;
        if a.as_ref().is_some_and(|a| a.acked_at == Some(now)) {
            self.record(
                tenant,
                "alert_acked",
                Some(actor),
                None,
                None,
                None,
                json!({"id": id}),
            );
        }
        Ok(a)
    }
}
