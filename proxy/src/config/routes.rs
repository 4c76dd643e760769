//! `[[routes]]`: patterns, methods, access, cache policy, invalidation.

use std::collections::HashSet;
use std::time::Duration;

use http::{HeaderName, Method};

use super::defaults::DEFAULT_CACHE_STATUSES;
use super::errors::Problems;
use super::fields::{header_name, header_names};
use super::raw::{RawRoute, RawRouteCache};
use crate::route::{self, Pattern, Rule};
use crate::upstream::IdentitySettings;

/// What routes inherit from the `[cache]` section.
pub(super) struct Inherited<'a> {
    pub default_ttl: Duration,
    /// `cache.max_stale`: the cap on the stale windows an origin asks for.
    pub max_stale: Duration,
    pub forward_headers: &'a [HeaderName],
    /// `[limits].default`, for routes without `limits`, as built and as
    /// written (for the route's checks to name).
    pub limits: &'a crate::guard::limits::Limits,
    pub raw_limits: &'a [super::raw::RawLimit],
    pub identity: &'a IdentitySettings,
}

/// A route may not forward or vary on a header the proxy sets or drops
/// itself (or its `_` twin, which CGI-style backends read as the same
/// header): the client's value never reaches the origin, so keying on it
/// would file one client's answer under another's claim (e.g. a spoofed
/// subject header).
pub(super) fn proxy_owned_headers(p: &mut Problems, rules: &[Rule], identity: &IdentitySettings) {
    for (i, rule) in rules.iter().enumerate() {
        let vary = rule.cache.iter().flat_map(|c| &c.vary).map(|n| ("cache.vary", n));
        for (field, name) in rule.forward_headers.iter().map(|n| ("forward_headers", n)).chain(vary) {
            if crate::upstream::is_proxy_owned(name, identity) {
                p.add(
                    format!("routes[{i}].{field}"),
                    format!("{name:?} is set or dropped by the proxy; it cannot be forwarded or keyed on"),
                );
            }
        }
    }
}

pub(super) fn rules(p: &mut Problems, raw: Vec<RawRoute>, inherited: &Inherited<'_>) -> Vec<Rule> {
    if raw.is_empty() {
        p.add(
            "routes",
            "at least one route is required; without routes every request is a 404",
        );
    }
    let mut names = HashSet::new();
    let mut rules = Vec::with_capacity(raw.len());
    for (i, route) in raw.into_iter().enumerate() {
        let at = |field: &str| format!("routes[{i}].{field}");
        let name = match route.name {
            Some(name) if !name.is_empty() => name,
            _ => {
                p.add(at("name"), "is required (it labels metrics and cache keys)");
                format!("#{i}")
            }
        };
        if !names.insert(name.clone()) {
            p.add(at("name"), format!("{name:?} is used by another route"));
        }
        let pattern = match route.path.as_deref().map(Pattern::parse) {
            Some(Ok(pattern)) => Some(pattern),
            Some(Err(e)) => {
                p.add(at("path"), e);
                None
            }
            None => {
                p.add(at("path"), "is required");
                None
            }
        };
        let methods = methods(p, &at("methods"), route.methods);
        let access = access(p, &at(""), route.access.as_deref(), route.roles);
        let is_read = methods.iter().all(|m| *m == Method::GET || *m == Method::HEAD);
        let cache_policy = route.cache.and_then(|c| {
            if !is_read {
                p.add(
                    at("cache"),
                    "only GET/HEAD routes can be cached; list writes in their own route",
                );
                return None;
            }
            route_cache(p, &at("cache"), c, &access, inherited)
        });
        let forward_headers = match &route.forward_headers {
            Some(list) => header_names(p, &at("forward_headers"), list),
            None => inherited.forward_headers.to_vec(),
        };
        let invalidates = route.invalidates.unwrap_or_default();
        if route.max_concurrent_requests == Some(0) {
            p.add(
                at("max_concurrent_requests"),
                "must be at least 1 (leave it out for no limit)",
            );
        }
        if !invalidates.is_empty() && is_read {
            p.add(at("invalidates"), "only write routes (not GET/HEAD) invalidate");
        }
        tag_list(p, &at("invalidates"), &invalidates);
        let limits = match &route.limits {
            Some(list) => super::guard::limits(p, &at("limits"), list),
            None => inherited.limits.clone(),
        };
        let (limits_at, raw_limits) = match &route.limits {
            Some(list) => (at("limits"), list.as_slice()),
            None => ("limits.default".to_owned(), inherited.raw_limits),
        };
        super::guard::check_route_limits(
            p,
            &limits_at,
            raw_limits,
            &name,
            access.is_public(),
            is_read,
            inherited.identity,
        );
        if let Some(pattern) = pattern {
            rules.push(Rule {
                cache_id: route::cache_id(&name, &pattern, cache_policy.as_ref(), &forward_headers),
                name: route::intern(&name),
                pattern,
                methods,
                access,
                cache: cache_policy,
                invalidates,
                forward_headers,
                allow_encoded_separators: route.allow_encoded_separators,
                max_concurrent_requests: route.max_concurrent_requests,
                limits,
            });
        }
    }
    rules
}

fn methods(p: &mut Problems, field: &str, raw: Option<Vec<String>>) -> Vec<Method> {
    let Some(raw) = raw.filter(|m| !m.is_empty()) else {
        p.add(field, "is required: list the methods this route accepts");
        return Vec::new();
    };
    let mut methods: Vec<Method> = Vec::new();
    for (j, m) in raw.iter().enumerate() {
        match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(method) if method == Method::CONNECT || method == Method::TRACE => {
                p.add(format!("{field}[{j}]"), format!("{m} is not proxied"))
            }
            Ok(method) if !methods.contains(&method) => methods.push(method),
            Ok(_) => {}
            Err(_) => p.add(format!("{field}[{j}]"), format!("{m:?} is not an HTTP method")),
        }
    }
    // HEAD is answered wherever GET is: clients expect it, and it reveals
    // nothing GET would not.
    if methods.contains(&Method::GET) && !methods.contains(&Method::HEAD) {
        methods.push(Method::HEAD);
    }
    methods
}

fn access(p: &mut Problems, prefix: &str, access: Option<&str>, roles: Option<Vec<String>>) -> crate::rbac::Access {
    use crate::rbac::Access;
    match (access, roles) {
        (Some("public"), None) => Access::Public,
        (Some("authenticated") | None, None) => Access::Authenticated,
        (Some("roles") | None, Some(roles)) if !roles.is_empty() && roles.iter().all(|r| !r.is_empty()) => {
            Access::Roles(roles)
        }
        (_, Some(_)) if access.is_some_and(|a| a != "roles") => {
            p.add(
                format!("{prefix}roles"),
                "cannot be combined with access = \"public\" or \"authenticated\"",
            );
            Access::Authenticated
        }
        (_, Some(_)) => {
            p.add(format!("{prefix}roles"), "must list at least one non-empty role");
            Access::Authenticated
        }
        (Some(other), None) => {
            p.add(
                format!("{prefix}access"),
                format!("{other:?} must be \"public\", \"authenticated\" or \"roles\" (with roles = [...])"),
            );
            Access::Authenticated
        }
    }
}

fn route_cache(
    p: &mut Problems,
    field: &str,
    raw: RawRouteCache,
    access: &crate::rbac::Access,
    inherited: &Inherited<'_>,
) -> Option<crate::cache::CachePolicy> {
    use crate::cache::{CachePolicy, Freshness, Scope};
    let scope = match (raw.scope.as_deref(), access.is_public()) {
        (None, true) | (Some("shared"), _) => Scope::Shared,
        (None, false) | (Some("user"), false) => Scope::User,
        (Some("role"), false) => Scope::Role,
        (Some(s @ ("user" | "role")), true) => {
            p.add(
                format!("{field}.scope"),
                format!("{s:?} needs an authenticated route; public routes can only be \"shared\""),
            );
            return None;
        }
        (Some(other), _) => {
            p.add(
                format!("{field}.scope"),
                format!("{other:?} must be \"user\", \"role\" or \"shared\""),
            );
            return None;
        }
    };
    let ttl = raw.ttl.unwrap_or(inherited.default_ttl);
    if ttl.is_zero() {
        p.add(format!("{field}.ttl"), "must be greater than zero");
    }
    let statuses = raw.statuses.unwrap_or_else(|| DEFAULT_CACHE_STATUSES.to_vec());
    for (j, s) in statuses.iter().enumerate() {
        if !(200..600).contains(s) {
            p.add(
                format!("{field}.statuses[{j}]"),
                format!("{s} is not a final HTTP status"),
            );
        }
        // A stored 206 or 304 would be served whole to a plain GET (RFC
        // 9111 §3.3, §4.3.4: they only complete or update a stored 200).
        if matches!(s, 206 | 304) {
            p.add(
                format!("{field}.statuses[{j}]"),
                format!("{s} answers one conditional or range request; it cannot be stored for others"),
            );
        }
    }
    let freshness = match raw.freshness.as_deref() {
        None | Some("route") => Freshness::Route,
        Some("origin") => Freshness::Origin,
        Some(other) => {
            p.add(
                format!("{field}.freshness"),
                format!("{other:?} must be \"origin\" or \"route\""),
            );
            Freshness::Route
        }
    };
    let vary = header_names(p, &format!("{field}.vary"), raw.vary.as_deref().unwrap_or_default());
    let mut tags = raw.tags.unwrap_or_default();
    tag_list(p, &format!("{field}.tags"), &tags);
    // Every entry also records the generation `POST /purge {"all": true}`
    // replaces.
    tags.push(crate::cache::purge::ALL_TAG.to_owned());
    Some(CachePolicy {
        scope,
        ttl,
        statuses,
        vary,
        tags,
        stale_while_revalidate: raw.stale_while_revalidate.unwrap_or_default(),
        stale_if_error: raw.stale_if_error.unwrap_or_default(),
        max_origin_stale: inherited.max_stale,
        freshness,
        honour_request_directives: raw.honour_request_directives.unwrap_or(false),
        targeted_cache_control: raw
            .targeted_cache_control
            .map(|name| header_name(p, &format!("{field}.targeted_cache_control"), &name)),
    })
}

fn tag_list(p: &mut Problems, field: &str, tags: &[String]) {
    for (j, tag) in tags.iter().enumerate() {
        if !crate::cache::purge::is_valid_tag(tag) {
            p.add(
                format!("{field}[{j}]"),
                format!(
                    "{tag:?} must be a non-empty word of at most {} bytes without spaces",
                    crate::cache::purge::MAX_TAG_LEN
                ),
            );
        } else if tag == crate::cache::purge::ALL_TAG {
            p.add(format!("{field}[{j}]"), "\"*\" is reserved for purging everything");
        }
    }
}
