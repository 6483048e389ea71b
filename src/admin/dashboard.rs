//! The dashboard: one page compiled into the binary (HTML, CSS and
//! JavaScript, no build step, no CDN) that polls the admin listener's own
//! JSON views and its per-second history, and a one-file snapshot of it with
//! the data embedded, for an incident ticket.

use super::history::History;
use serde_json::json;

const PAGE: &str = include_str!("dashboard.html");
/// Where the snapshot's data goes in the page.
const SLOT: &str = "/*SNAPSHOT*/null";

/// The live page.
pub fn page() -> &'static str {
    PAGE
}

/// The views the page reads, by the path it reads them from.
pub struct Views {
    pub config: serde_json::Value,
    pub pools: serde_json::Value,
    pub shards: serde_json::Value,
    pub heat: serde_json::Value,
    pub cache: serde_json::Value,
    pub tls: serde_json::Value,
    pub reloads: serde_json::Value,
    pub discovery: serde_json::Value,
}

/// The page with every view and the whole history embedded: it draws
/// itself without the admin listener.
pub fn snapshot(v: Views, history: &History) -> String {
    let taken = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let data = json!({
        "taken_unix": taken,
        "/admin/config": v.config,
        "/admin/pools": v.pools,
        "/admin/shards": v.shards,
        "/admin/heat": v.heat,
        "/admin/cache": v.cache,
        "/admin/tls": v.tls,
        "/admin/reloads": v.reloads,
        "/admin/discovery": v.discovery,
        "/admin/history": history.json(super::history::SECONDS, &[]),
    });
    // Inside a <script>, `</` could end it: written as `<\/`, the same string to JavaScript.
    let text = data.to_string().replace("</", "<\\/");
    PAGE.replacen(SLOT, &text, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_embeds_its_data_where_the_page_reads_it() {
        assert!(PAGE.contains(SLOT));
        let h = History::default();
        h.record(5, "ringmaster_connections_active 3\n");
        let v = || json!({ "note": "</script><script>alert(1)</script>" });
        let page =
            snapshot(Views { config: v(), pools: v(), shards: v(), heat: v(), cache: v(), tls: v(), reloads: v(), discovery: v() }, &h);
        assert!(!page.contains(SLOT));
        assert!(page.contains("\"ringmaster_connections_active\":[3.0]"));
        assert!(!page.contains("</script><script>alert"), "data cannot end the script");
        assert_eq!(page.matches("</script>").count(), 1);
    }
}
