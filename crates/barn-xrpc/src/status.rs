//! The status page at `/`: one server-rendered HTML page (no script) for
//! a person checking on barn — hosts and their lag, imports, the blob
//! queue, recent errors, and every account's backup with its missing
//! blobs. It refreshes itself every 10 seconds.
//!
//! What the public sees follows the access policy: active accounts only,
//! and no log lines (they may name inactive accounts). The operator (admin
//! bearer token) sees every account and the recent errors.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use barn_store::{BlobStatus, SyncState};

use crate::Gateway;

/// What the running barn knows that the store does not: hosts' live
/// progress and recent errors. The binary provides it.
pub trait LiveStatus: Send + Sync + 'static {
    /// A snapshot, taken now.
    fn snapshot(&self) -> StatusSnapshot;
}

/// The live part of the status page.
#[derive(Debug, Clone, Default)]
pub struct StatusSnapshot {
    /// barn's version.
    pub version: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Every followed host.
    pub hosts: Vec<HostLine>,
    /// The latest warnings and errors, newest first.
    pub recent_errors: Vec<ErrorLine>,
}

/// One host on the status page.
#[derive(Debug, Clone, Default)]
pub struct HostLine {
    /// The host URL.
    pub host: String,
    /// Tracked whole (or for some accounts only).
    pub whole: bool,
    /// Durable cursor.
    pub cursor: Option<i64>,
    /// Highest seq received.
    pub seq: i64,
    /// Received, not yet durable.
    pub lag_seq: i64,
    /// Event time to durable at the last group commit, ms.
    pub lag_ms: u64,
    /// Last event received, ms since the epoch (0: never).
    pub last_event_ms: u64,
    /// A listing pass under way (`backfill`, `sweep`), if any, and how
    /// many repos it listed.
    pub listing: Option<(String, u64)>,
    /// Imports waiting.
    pub imports_queued: usize,
    /// Imports running.
    pub imports_running: usize,
    /// Imports that failed since start.
    pub imports_failed: u64,
}

/// One warning or error log line.
#[derive(Debug, Clone, Default)]
pub struct ErrorLine {
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// `WARN` or `ERROR`.
    pub level: String,
    /// The module that logged it.
    pub target: String,
    /// The message and its fields.
    pub message: String,
}

#[derive(serde::Deserialize, Default)]
pub(crate) struct PageParams {
    /// Accounts after this DID.
    cursor: Option<String>,
    /// Show this account's missing blobs.
    account: Option<String>,
}

const ACCOUNTS_PER_PAGE: usize = 100;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// How long before `now_ms` the instant `ms` was, in words (`never` for
/// 0).
pub fn ago(now_ms: u64, ms: u64) -> String {
    if ms == 0 {
        return "never".into();
    }
    let s = now_ms.saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// A byte count in binary units (`64.0 MiB`).
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #ddd;vertical-align:top}\
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.ok{color:#17702a}.warn{color:#a05a00}.bad{color:#b00020}.muted{color:#777}\
code{font-size:.92em}.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.5em 1em;min-width:9em}\
.card b{display:block;font-size:1.3em}";

pub(crate) async fn page(
    State(gw): State<Gateway>,
    Query(params): Query<PageParams>,
    headers: HeaderMap,
) -> Response {
    let operator = gw.is_admin_headers(&headers);
    let live = gw.live_status().map(|l| l.snapshot()).unwrap_or_default();
    let store = gw.store().clone();
    let html = tokio::task::spawn_blocking(move || render(&store, &live, &params, operator)).await;
    match html {
        Ok(Ok(html)) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'",
                ),
            ],
            html,
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "status page: store read failed");
            crate::XrpcError::new(crate::ErrorCode::InternalServerError, "status page failed")
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "status page: task failed");
            crate::XrpcError::new(crate::ErrorCode::InternalServerError, "status page failed")
                .into_response()
        }
    }
}

fn render(
    store: &Arc<barn_store::Store>,
    live: &StatusSnapshot,
    params: &PageParams,
    operator: bool,
) -> barn_store::Result<String> {
    use std::fmt::Write;
    let now = barn_store::now_ms();
    let mut h = String::with_capacity(32 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta http-equiv=refresh content=10><title>barn status</title>\
         <style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        h,
        "<h1>barn</h1><div class=muted>version {} · up {} · {} · page refreshes every 10 s{}</div>",
        esc(&live.version),
        ago(now, now.saturating_sub(live.uptime_secs * 1000)).replace(" ago", ""),
        esc(barn_repo::syntax::Datetime::from_unix_millis(now as i64).as_str()),
        if operator { " · operator view" } else { "" }
    );

    // Cards: the numbers that say "is it keeping up".
    let queue = store.blob_queue_len(1_000_000)?;
    let oldest = store
        .next_blob_due()?
        .map(|due| now.saturating_sub(due) / 1000)
        .unwrap_or(0);
    let worst_lag = live.hosts.iter().map(|x| x.lag_seq).max().unwrap_or(0);
    let _ = write!(
        h,
        "<h2>Overview</h2><div class=cards>\
         <div class=card>hosts<b>{}</b></div>\
         <div class=card>most events not yet durable<b class={}>{}</b></div>\
         <div class=card>blob queue<b>{}</b></div>\
         <div class=card>oldest queued blob due<b class={}>{}s</b></div>\
         <div class=card>store on disk<b>{}</b></div></div>",
        live.hosts.len(),
        if worst_lag > 1000 { "bad" } else { "ok" },
        worst_lag,
        queue,
        if oldest > 600 { "warn" } else { "ok" },
        oldest,
        human_bytes(store.disk_space()?),
    );

    let _ = write!(
        h,
        "<h2>Hosts</h2><table><tr><th>host</th><th>tracked</th><th>cursor</th><th>seq seen</th>\
         <th>not yet durable</th><th>lag</th><th>last event</th><th>backfill / reconcile</th></tr>"
    );
    if live.hosts.is_empty() {
        h.push_str("<tr><td colspan=8 class=muted>no host followed: <code>barn track host https://pds.example.com</code></td></tr>");
    }
    for x in &live.hosts {
        let listing = match &x.listing {
            Some((kind, listed)) => format!("listing ({kind}): {listed} listed; "),
            None => String::new(),
        };
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td class=n>{}</td><td class=n>{}</td>\
             <td class='n {}'>{}</td><td class=n>{:.1}s</td><td>{}</td><td>{}{} running, {} queued, <span class={}>{} failed</span></td></tr>",
            esc(&x.host),
            if x.whole {
                "whole host"
            } else {
                "some accounts"
            },
            x.cursor
                .map(|c| c.to_string())
                .unwrap_or_else(|| "none".into()),
            x.seq,
            if x.lag_seq > 1000 { "bad" } else { "ok" },
            x.lag_seq,
            x.lag_ms as f64 / 1000.0,
            ago(now, x.last_event_ms),
            esc(&listing),
            x.imports_running,
            x.imports_queued,
            if x.imports_failed > 0 {
                "warn"
            } else {
                "muted"
            },
            x.imports_failed,
        );
    }
    h.push_str("</table>");

    // Accounts, a page at a time.
    let cursor = params.cursor.as_deref();
    let page = store.repos_page(cursor, ACCOUNTS_PER_PAGE + 1)?;
    let more = page.len() > ACCOUNTS_PER_PAGE;
    let _ = write!(
        h,
        "<h2>Accounts</h2><table><tr><th>account</th><th>status</th><th>sync</th><th>rev</th>\
         <th>revisions</th><th>blobs stored</th><th>queued</th><th>missing</th></tr>"
    );
    let mut last = None;
    let mut hidden = 0;
    for (did, state) in page.into_iter().take(ACCOUNTS_PER_PAGE) {
        last = Some(did.clone());
        if !operator && !state.active {
            hidden += 1;
            continue;
        }
        let counts = store.blob_counts(&did)?;
        let _ = write!(
            h,
            "<tr><td><code>{}</code>{}</td><td class={}>{}</td><td class={}>{}</td><td><code>{}</code></td>\
             <td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            esc(&did),
            state
                .handle
                .as_deref()
                .map(|x| format!(" <span class=muted>{}</span>", esc(x)))
                .unwrap_or_default(),
            if state.active { "ok" } else { "warn" },
            if state.active {
                "active".to_owned()
            } else {
                esc(state.status.as_deref().unwrap_or("inactive"))
            },
            if state.sync == SyncState::Synchronized {
                "ok"
            } else {
                "warn"
            },
            match state.sync {
                SyncState::Synchronized => "synchronized".to_owned(),
                SyncState::Desynchronized => format!(
                    "waiting for a resync ({})",
                    esc(state.sync_reason.as_deref().unwrap_or("?"))
                ),
            },
            esc(state.rev.as_deref().unwrap_or("-")),
            state.revisions,
            counts.stored,
            counts.queued,
            if counts.missing > 0 {
                format!(
                    "<a class=bad href=\"/?account={}\">{}</a>",
                    esc(&did),
                    counts.missing
                )
            } else {
                "0".into()
            },
        );
    }
    h.push_str("</table>");
    if hidden > 0 {
        let _ = write!(
            h,
            "<p class=muted>{hidden} inactive account(s) on this page are shown to the operator only.</p>"
        );
    }
    if more && let Some(last) = last {
        let _ = write!(
            h,
            "<p><a href=\"/?cursor={}\">next accounts →</a></p>",
            esc(&last)
        );
    }

    if let Some(did) = params.account.as_deref() {
        let visible = match store.repo(did)? {
            Some(s) => operator || s.active,
            None => false,
        };
        if visible {
            let missing = store.missing_blobs(did)?;
            let _ = write!(
                h,
                "<h2>Missing blobs of <code>{}</code></h2><table><tr><th>blob</th><th>reason</th><th>attempts</th><th>detail</th></tr>",
                esc(did)
            );
            for (cid, b) in missing
                .iter()
                .filter(|(_, b)| b.status == BlobStatus::Missing)
                .take(500)
            {
                let _ = write!(
                    h,
                    "<tr><td><code>{}</code></td><td>{}</td><td class=n>{}</td><td>{}</td></tr>",
                    cid,
                    esc(b.reason.as_deref().unwrap_or("")),
                    b.attempts,
                    esc(b.detail.as_deref().unwrap_or("")),
                );
            }
            h.push_str("</table>");
        }
    }

    h.push_str("<h2>Recent warnings and errors</h2>");
    if !operator {
        let _ = write!(
            h,
            "<p class=muted>{} in memory; shown to the operator only (send the admin token).</p>",
            live.recent_errors.len()
        );
    } else if live.recent_errors.is_empty() {
        h.push_str("<p class=ok>none since start</p>");
    } else {
        h.push_str("<table><tr><th>when</th><th>level</th><th>where</th><th>what</th></tr>");
        for e in &live.recent_errors {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class={}>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                ago(now, e.at_ms),
                if e.level == "ERROR" { "bad" } else { "warn" },
                esc(&e.level),
                esc(&e.target),
                esc(&e.message),
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<p class=muted>Metrics: <a href=\"/metrics\">/metrics</a> · health: <a href=\"/xrpc/_health\">/xrpc/_health</a></p></body></html>");
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
