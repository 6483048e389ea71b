//! A service's scaler checked and converted into `scale::Policy`.

use crate::config::error::Reporter;
use crate::config::schema::scale::ScalerSpec;
use crate::scale::{local, Backend, Policy};
use std::time::Duration;
use toml::Spanned;

pub fn policy(spec: &Spanned<ScalerSpec>, memcache: bool, r: &mut Reporter) -> Option<Policy> {
    let s = spec.get_ref();
    if memcache {
        r.error(
            spec.span(),
            "a scaler is for HTTP services for now (memcache services measure heat but do not scale yet)",
            "remove [scaler] here",
        );
    }
    let target = *s.target.get_ref();
    if !(target.is_finite() && target > 0.0) {
        r.error(s.target.span(), "scaler target must be above 0: the load one replica should carry", "target = 100");
    }
    let (min, max) = (*s.min_replicas.get_ref(), *s.max_replicas.get_ref());
    if min < 1 || min > max || max > 1000 {
        r.error(
            s.max_replicas.span(),
            format!("min_replicas {min} and max_replicas {max} must satisfy 1 <= min <= max <= 1000"),
            "min_replicas = 1, max_replicas = 10",
        );
    }
    let tolerance = *s.tolerance.get_ref();
    if !(0.0..1.0).contains(&tolerance) {
        r.error(s.tolerance.span(), "tolerance must be at least 0 and below 1", "0.1, as the Kubernetes HPA");
    }
    for d in [&s.scale_up_window, &s.scale_down_window, &s.cooldown] {
        if d.get_ref().0 > Duration::from_secs(3600) {
            r.error(d.span(), "scaler windows and cooldown must be at most 1h", "\"30s\"");
        }
    }
    let Some(l) = &s.local else {
        r.error(
            spec.span(),
            "a scaler needs a back-end that adds and removes replicas",
            "local = { command = \"...\", ports = \"29100-29199\" }",
        );
        return None;
    };
    let backend = Backend::Local(local_settings(l, r)?);
    Some(Policy {
        metric: s.metric,
        target,
        min_replicas: min,
        max_replicas: max,
        tolerance,
        up_window: s.scale_up_window.get_ref().0,
        down_window: s.scale_down_window.get_ref().0,
        cooldown: s.cooldown.get_ref().0,
        backend,
    })
}

fn local_settings(spec: &Spanned<crate::config::schema::scale::LocalSpec>, r: &mut Reporter) -> Option<local::Settings> {
    let l = spec.get_ref();
    if !l.command.get_ref().contains("{port}") && !l.command.get_ref().contains("{address}") {
        r.error(
            l.command.span(),
            "the command must say where the replica listens: {address} or {port}",
            "\"ringmaster backend --listen {address} --name {name}\"",
        );
    }
    let host = l
        .host
        .get_ref()
        .parse()
        .map_err(|_| r.error(l.host.span(), format!("`{}` is not an IP address", l.host.get_ref()), "\"127.0.0.1\""))
        .ok();
    let ports = l.ports.get_ref().split_once('-').and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
    let ports = match ports {
        Some((a, b)) if a >= 1 && a <= b => Some((a, b)),
        _ => {
            r.error(l.ports.span(), format!("`{}` is not a port range", l.ports.get_ref()), "\"29100-29199\"");
            None
        }
    };
    let ready_timeout = l.ready_timeout.get_ref().0;
    if ready_timeout.is_zero() {
        r.error(l.ready_timeout.span(), "ready_timeout must be above 0", "\"10s\"");
    }
    Some(local::Settings { command: l.command.get_ref().clone(), host: host?, ports: ports?, ready_timeout, drain: l.drain.get_ref().0 })
}
