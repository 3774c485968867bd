//! An alert rule's webhook: each firing and resolution POSTed to the rule's
//! URL, signed like the event stream's webhooks (`X-Roster-Timestamp`,
//! `X-Roster-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`),
//! retried with back-off for `webhooks.retry_for`. Each POST runs on its own
//! task: a slow or failing URL never delays evaluation or another rule.
//!
//! Body: `{"type": "alert_fired" | "alert_resolved", "alert": Alert}`.

use std::sync::Arc;

use tokio::time::Instant;

use super::AlertView;
use crate::config::WebhooksConfig;
use crate::events::webhooks::{backoff, http_client, signature};
use crate::metrics as m;

/// Sends alert webhooks.
pub struct Notifier {
    client: reqwest::Client,
    cfg: WebhooksConfig,
}

impl Notifier {
    pub fn new(cfg: WebhooksConfig) -> Arc<Self> {
        Arc::new(Self {
            client: http_client(&cfg),
            cfg,
        })
    }

    /// Starts delivering `alert` to `url`; returns at once.
    pub fn send(
        self: &Arc<Self>,
        url: String,
        secret: String,
        kind: &'static str,
        alert: AlertView,
    ) {
        let body = serde_json::to_vec(&serde_json::json!({"type": kind, "alert": alert}))
            .unwrap_or_default();
        let me = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                match me.post(&url, &secret, &alert.rule_id, &body).await {
                    Ok(()) => {
                        metrics::counter!(m::ALERT_WEBHOOKS, "outcome" => "delivered").increment(1);
                        return;
                    }
                    Err(e) if started.elapsed() >= me.cfg.retry_for.0 => {
                        tracing::warn!(rule = %alert.rule_id, alert = %alert.id, attempts = attempt, "alert webhook given up: {e}");
                        metrics::counter!(m::ALERT_WEBHOOKS, "outcome" => "failed").increment(1);
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(rule = %alert.rule_id, "alert webhook failed (will retry): {e}");
                        let left = me.cfg.retry_for.0.saturating_sub(started.elapsed());
                        tokio::time::sleep(backoff(attempt).min(left)).await;
                    }
                }
            }
        });
    }

    async fn post(&self, url: &str, secret: &str, rule: &str, body: &[u8]) -> Result<(), String> {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string();
        let r = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("x-roster-alert-rule", rule)
            .header("x-roster-timestamp", &ts)
            .header("x-roster-signature", signature(secret, &ts, body))
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", r.status().as_u16()))
        }
    }
}
