//! Webhook endpoints (REST `/api/v1/webhooks`): stored first, then started, so
//! what a 2xx confirmed survives a restart; each change is an activity row with
//! who asked. The request (URL, filter) is checked in `http/api/webhooks.rs`.

use serde_json::json;

use super::admin::AdminError;
use super::Node;
use crate::events::webhooks::{DeliveryStats, WebhookSpec};
use crate::ids::TenantId;
use crate::store::{StoreError, StoredWebhook};

/// The id of a Pusher app's webhook among its tenant's endpoints.
pub const PUSHER_WEBHOOK: &str = "pusher";

impl Node {
    /// Whether the endpoint is one of `[[webhooks.endpoints]]` or a Pusher
    /// app's webhook (read-only over REST).
    pub fn is_config_webhook(&self, tenant: &TenantId, id: &str) -> bool {
        self.config_webhooks()
            .iter()
            .any(|e| &e.tenant == tenant && e.id == id)
    }

    /// The endpoints of `[[webhooks.endpoints]]`, and the webhook (id
    /// [`PUSHER_WEBHOOK`]) of each `[[pusher.apps]]` with a `webhook_url`, as
    /// specs (checked at load).
    fn config_webhooks(&self) -> Vec<WebhookSpec> {
        let own = self.config.webhooks.endpoints.iter().filter_map(|e| {
            Some(WebhookSpec {
                id: e.id.clone(),
                tenant: TenantId::parse(&e.tenant).ok()?,
                url: e.url.clone(),
                secret: e.secret.clone(),
                events: e.events.as_ref().map(|l| l.iter().cloned().collect()),
                created_at: 0,
                pusher_key: None,
            })
        });
        let pusher = self.config.pusher.apps.iter().filter_map(|a| {
            Some(WebhookSpec {
                id: PUSHER_WEBHOOK.to_string(),
                tenant: TenantId::parse(&a.tenant).ok()?,
                url: a.webhook_url.clone()?,
                secret: a.secret.clone(),
                events: Some(
                    [
                        "room_occupied",
                        "room_vacated",
                        "member_added",
                        "member_removed",
                        "room_event",
                    ]
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                ),
                created_at: 0,
                pusher_key: Some(a.key.clone()),
            })
        });
        own.chain(pusher).collect()
    }

    /// Starts the stored endpoints and those of the configuration (start-up;
    /// a configured id wins over a stored one).
    pub async fn load_webhooks(&self) -> Result<usize, StoreError> {
        let all = self.store.all_webhooks().await?;
        let mut n = 0;
        for spec in self.config_webhooks() {
            self.webhooks.upsert(spec);
            n += 1;
        }
        for w in all {
            let Ok(tenant) = TenantId::parse(&w.tenant) else {
                continue;
            };
            if self.is_config_webhook(&tenant, &w.id) {
                continue;
            }
            self.webhooks.upsert(WebhookSpec {
                id: w.id,
                tenant,
                url: w.url,
                secret: w.secret,
                events: w.events.map(|e| e.into_iter().collect()),
                created_at: w.created_at,
                pusher_key: None,
            });
            n += 1;
        }
        Ok(n)
    }

    /// Creates or replaces an endpoint.
    pub async fn save_webhook(&self, spec: WebhookSpec, actor: &str) -> Result<(), AdminError> {
        self.store
            .upsert_webhook(&StoredWebhook {
                tenant: spec.tenant.to_string(),
                id: spec.id.clone(),
                url: spec.url.clone(),
                secret: spec.secret.clone(),
                events: spec.events.as_ref().map(|e| e.iter().cloned().collect()),
                created_at: spec.created_at,
            })
            .await?;
        self.record(
            &spec.tenant,
            "webhook_saved",
            Some(actor),
            None,
            None,
            None,
            json!({"id": spec.id, "url": spec.url, "events": spec.events}),
        );
        // A new endpoint starts at the tenant's newest event: it is not sent
        // what happened before it existed.
        if self.webhooks.get(&spec.tenant, &spec.id).is_none() {
            let head = self.engine.event_head(&spec.tenant).await?;
            self.engine
                .set_event_cursor(&spec.tenant, &spec.id, head)
                .await?;
        }
        self.webhooks.upsert(spec);
        Ok(())
    }

    /// Takes up endpoints other nodes saved or deleted (several nodes share
    /// the database): the stored set replaces the running one.
    pub async fn sync_webhooks(&self) -> Result<(), StoreError> {
        let stored = self.store.all_webhooks().await?;
        let mut keep: std::collections::HashSet<(TenantId, String)> = self
            .config_webhooks()
            .into_iter()
            .map(|s| (s.tenant, s.id))
            .collect();
        for w in stored {
            let Ok(tenant) = TenantId::parse(&w.tenant) else {
                continue;
            };
            if self.is_config_webhook(&tenant, &w.id) {
                continue;
            }
            keep.insert((tenant.clone(), w.id.clone()));
            let spec = WebhookSpec {
                id: w.id,
                tenant,
                url: w.url,
                secret: w.secret,
                events: w.events.map(|e| e.into_iter().collect()),
                created_at: w.created_at,
                pusher_key: None,
            };
            if self.webhooks.get(&spec.tenant, &spec.id).map(|(s, _)| s) != Some(spec.clone()) {
                self.webhooks.upsert(spec);
            }
        }
        for (tenant, id) in self.webhooks.all_ids() {
            if !keep.contains(&(tenant.clone(), id.clone())) {
                self.webhooks.remove(&tenant, &id);
            }
        }
        Ok(())
    }

    /// Stops and forgets an endpoint; `false` if the tenant has none by that id.
    pub async fn delete_webhook(
        &self,
        tenant: &TenantId,
        id: &str,
        actor: &str,
    ) -> Result<bool, AdminError> {
        let stored = self.store.delete_webhook(tenant.as_str(), id).await?;
        let running = self.webhooks.remove(tenant, id);
        if stored || running {
            self.record(
                tenant,
                "webhook_deleted",
                Some(actor),
                None,
                None,
                None,
                json!({"id": id}),
            );
        }
        Ok(stored || running)
    }

    pub fn webhook(&self, tenant: &TenantId, id: &str) -> Option<(WebhookSpec, DeliveryStats)> {
        self.webhooks.get(tenant, id)
    }

    pub fn webhooks(&self, tenant: &TenantId) -> Vec<(WebhookSpec, DeliveryStats)> {
        self.webhooks.list(tenant)
    }
}
