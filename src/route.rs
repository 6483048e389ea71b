//! Route: match a request on listener, host, path prefix and method, in config
//! order; the first route that matches wins (as in Envoy and HAProxy).

use crate::metrics::RouteStats;
use crate::service::Service;
use http::Method;
use std::sync::Arc;

#[derive(Clone)]
pub enum HostMatch {
    /// Lower-case exact host.
    Exact(String),
    /// `*.example.com` stored as `.example.com`: any subdomain.
    Suffix(String),
}

impl HostMatch {
    pub fn parse(pattern: &str) -> HostMatch {
        let p = pattern.to_ascii_lowercase();
        match p.strip_prefix('*') {
            Some(rest) if rest.starts_with('.') => HostMatch::Suffix(rest.to_string()),
            _ => HostMatch::Exact(p),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => h.eq_ignore_ascii_case(host),
            HostMatch::Suffix(s) => host.len() > s.len() && host.as_bytes()[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes()),
        }
    }
}

pub struct Route {
    pub name: String,
    pub host: Option<HostMatch>,
    pub path_prefix: String,
    pub methods: Vec<Method>,
    /// Listener names; empty means every listener.
    pub listeners: Vec<String>,
    pub service: Arc<Service>,
    pub stats: Arc<RouteStats>,
    /// Sharded services: every request goes to every shard.
    pub fan_out: bool,
    pub cache: Option<Arc<crate::cache::flow::RouteCache>>,
    /// Rate-limit policies, for every request and by identity tier.
    pub limits: crate::limit::RoutePolicies,
    /// Upgrade protocols forwarded, lowercase.
    pub upgrades: Vec<String>,
}

impl Route {
    fn matches(&self, listener: &str, method: &Method, host: Option<&str>, path: &str) -> bool {
        if !path.starts_with(self.path_prefix.as_str()) {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.contains(method) {
            return false;
        }
        if !self.listeners.is_empty() && !self.listeners.iter().any(|l| l == listener) {
            return false;
        }
        match &self.host {
            None => true,
            Some(m) => host.map(|h| m.matches(crate::key::strip_port(h))).unwrap_or(false),
        }
    }
}

#[derive(Default)]
pub struct Router {
    pub routes: Vec<Route>,
}

impl Router {
    pub fn find(&self, listener: &str, method: &Method, host: Option<&str>, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(listener, method, host, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert!(HostMatch::parse("Example.com").matches("example.COM"));
        assert!(!HostMatch::parse("example.com").matches("a.example.com"));
        let w = HostMatch::parse("*.example.com");
        assert!(w.matches("a.example.com"));
        assert!(!w.matches("example.com"));
    }
}
