//! What to probe, and how: the update servers and the route to each.
//!
//! Servers come from the config, or else from the connector's policy, or
//! else [`FALLBACK_UPDATE_SERVER`]. The proxy comes from the config, or else
//! the policy, or else `HTTPS_PROXY` (honouring `NO_PROXY`). With a proxy,
//! each server is probed through it, and also directly when
//! `proxy.compare_direct` is set. When the servers come from the policy (or
//! the fallback) and the policy disables TETRA or its updater, nothing is
//! probed: the connector does not update, so nothing can fail.
//!
//! This is a pure function of the config, the policy and the environment; it
//! opens no file and no socket.

use crate::config::{parse_host_port, Config, ServerConfig, FALLBACK_UPDATE_SERVER};
use crate::connector::policy::Policy;
use crate::probe::proxy::{ProxySource, ProxySpec};
use crate::probe::RouteSpec;
use crate::secret::Secret;

/// One probe to run: a server over a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub server: ServerConfig,
    pub route: RouteSpec,
}

/// Everything a scrape probes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub targets: Vec<Target>,
    /// The proxies in use, once each.
    pub proxies: Vec<ProxySpec>,
    /// What the policy says of TETRA updates; `None` without a policy.
    pub definitions_enabled: Option<bool>,
}

/// Reads an environment variable; a closure so tests need not touch the
/// process environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Decides what to probe. `policy_unreadable` says that a policy exists
/// but could not be read: the update server and proxy the connector uses
/// are then unknown, and guessing them (probing Cisco's server directly,
/// around the proxy) would page for the wrong step.
pub fn plan(
    config: &Config,
    policy: Option<&Policy>,
    policy_unreadable: bool,
    env: Env<'_>,
) -> Plan {
    let definitions_enabled = policy.map(Policy::definitions_enabled);

    let (servers, from_config) = if !config.servers.is_empty() {
        (config.servers.clone(), true)
    } else {
        let server = match policy.and_then(|p| p.update_server.as_deref()) {
            Some(name) => {
                // The policy's names were checked when it was read.
                let (host, port) = parse_host_port(name).unwrap_or((name.to_string(), None));
                let mut server = default_server(host);
                server.port = port.unwrap_or(443);
                server
            }
            None => default_server(FALLBACK_UPDATE_SERVER.to_string()),
        };
        (vec![server], false)
    };

    let mut plan = Plan {
        definitions_enabled,
        ..Plan::default()
    };
    if !from_config && (definitions_enabled == Some(false) || policy_unreadable) {
        return plan;
    }

    for server in servers {
        match proxy_for(config, policy, env, &server.host) {
            Some(proxy) => {
                if !plan.proxies.contains(&proxy) {
                    plan.proxies.push(proxy.clone());
                }
                plan.targets.push(Target {
                    server: server.clone(),
                    route: RouteSpec::Proxy(proxy),
                });
                if config.proxy.compare_direct {
                    plan.targets.push(Target {
                        server,
                        route: RouteSpec::Direct,
                    });
                }
            }
            None => plan.targets.push(Target {
                server,
                route: RouteSpec::Direct,
            }),
        }
    }
    plan
}

fn default_server(host: String) -> ServerConfig {
    ServerConfig {
        host,
        port: 443,
        path: "/".to_string(),
        valid_status_codes: Vec::new(),
        revocation: Default::default(),
    }
}

/// The proxy to reach `host` through, if any.
pub fn proxy_for(
    config: &Config,
    policy: Option<&Policy>,
    env: Env<'_>,
    host: &str,
) -> Option<ProxySpec> {
    let settings = &config.proxy;
    let configured_user = settings.username.clone();
    let configured_password = settings.resolved_password.clone();
    let credentials = |user: Option<String>, password: Option<Secret>| {
        user.map(|user| (user, password.unwrap_or_else(|| Secret::new(""))))
    };

    if let Some((host, port)) = config.proxy_address() {
        return Some(ProxySpec {
            host,
            port,
            source: ProxySource::Config,
            credentials: credentials(configured_user, configured_password),
        });
    }

    if settings.from_policy {
        if let Some(proxy) = policy.and_then(|p| p.proxy.as_ref()) {
            let (server_host, server_port) =
                parse_host_port(&proxy.server).unwrap_or((proxy.server.clone(), None));
            let port = proxy.port.or(server_port).unwrap_or(80);
            // authtype 0 (or absent) is "no authentication"; any other value
            // is sent as Basic, the only scheme the exporter speaks.
            let wants_auth = proxy.auth_type.unwrap_or(0) != 0;
            let user = configured_user.or_else(|| proxy.username.clone());
            let password = configured_password.or_else(|| proxy.password.clone());
            return Some(ProxySpec {
                host: server_host,
                port,
                source: ProxySource::Policy,
                credentials: if wants_auth {
                    credentials(user, password)
                } else {
                    None
                },
            });
        }
    }

    if settings.from_environment {
        let value = env("HTTPS_PROXY").or_else(|| env("https_proxy"))?;
        if value.trim().is_empty() {
            return None;
        }
        let no_proxy = env("NO_PROXY")
            .or_else(|| env("no_proxy"))
            .unwrap_or_default();
        if excluded_by_no_proxy(host, &no_proxy) {
            return None;
        }
        return environment_proxy(&value, configured_user, configured_password);
    }
    None
}

/// Parses an `HTTPS_PROXY` value: `[http://][USER[:PASSWORD]@]HOST[:PORT]`.
/// Other schemes are not spoken and yield no proxy.
fn environment_proxy(
    value: &str,
    configured_user: Option<String>,
    configured_password: Option<Secret>,
) -> Option<ProxySpec> {
    let value = value.trim();
    let with_scheme = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    let Ok(url) = url::Url::parse(&with_scheme) else {
        tracing::warn!("HTTPS_PROXY is not a URL; probing without a proxy");
        return None;
    };
    if url.scheme() != "http" {
        tracing::info!(
            scheme = url.scheme(),
            "HTTPS_PROXY names a scheme that is not spoken"
        );
        return None;
    }
    let Some(host) = url.host().map(|host| match host {
        url::Host::Ipv6(ip) => ip.to_string(),
        other => other.to_string(),
    }) else {
        tracing::warn!("HTTPS_PROXY names no host; probing without a proxy");
        return None;
    };
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let url_user = Some(decode(url.username())).filter(|u| !u.is_empty());
    let url_password = url.password().map(|p| Secret::new(decode(p)));
    let user = configured_user.or(url_user);
    let password = configured_password.or(url_password);
    Some(ProxySpec {
        host,
        port: url.port_or_known_default().unwrap_or(80),
        source: ProxySource::Environment,
        credentials: user.map(|user| (user, password.unwrap_or_else(|| Secret::new("")))),
    })
}

/// Whether `NO_PROXY` exempts `host`: `*`, an exact name or address, or a
/// domain suffix (`example.com` and `.example.com` both match
/// `a.example.com`). Ports in entries are ignored; CIDR ranges are not
/// understood and match nothing.
pub fn excluded_by_no_proxy(host: &str, no_proxy: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    no_proxy
        .split(',')
        .map(|entry| entry.trim().to_ascii_lowercase())
        .filter(|entry| !entry.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let (name, _) = crate::config::split_entry(&entry);
            let name = name.trim_start_matches('.').trim_end_matches('.');
            !name.is_empty() && (host == name || host.ends_with(&format!(".{name}")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::policy::PolicyProxy;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn policy(server: Option<&str>, enabled: bool, proxy: Option<PolicyProxy>) -> Policy {
        Policy {
            tetra_enabled: Some(enabled),
            updater_enabled: Some(true),
            update_server: server.map(str::to_string),
            update_interval_seconds: Some(3600),
            proxy,
        }
    }

    fn policy_proxy() -> PolicyProxy {
        PolicyProxy {
            server: "proxy.corp".to_string(),
            port: Some(3128),
            kind: Some(1),
            auth_type: Some(1),
            username: Some("svc".to_string()),
            password: Some(Secret::new("from-policy")),
            pac_location: None,
        }
    }

    #[test]
    fn servers_come_from_config_then_policy_then_fallback() {
        let none = env_of(&[]);
        let config = Config::from_yaml("{}").expect("config");
        let plan_of = |p: Option<&Policy>| plan(&config, p, false, &none);

        let p = policy(Some("tetra-defs.eu.amp.cisco.com"), true, None);
        assert_eq!(
            plan_of(Some(&p)).targets[0].server.host,
            "tetra-defs.eu.amp.cisco.com"
        );
        assert_eq!(plan_of(None).targets[0].server.host, FALLBACK_UPDATE_SERVER);
        assert_eq!(plan_of(None).targets[0].route, RouteSpec::Direct);

        let config = Config::from_yaml("servers: [{host: mirror.example}]").expect("config");
        let plan = plan(&config, Some(&p), false, &none);
        assert_eq!(plan.targets.len(), 1);
        assert_eq!(plan.targets[0].server.host, "mirror.example");
    }

    #[test]
    fn tetra_disabled_by_policy_probes_nothing() {
        let none = env_of(&[]);
        let config = Config::from_yaml("{}").expect("config");
        let p = policy(Some("tetra-defs.amp.cisco.com"), false, None);
        let plan = plan(&config, Some(&p), false, &none);
        assert!(plan.targets.is_empty());
        let config = Config::from_yaml("{}").expect("config");
        assert!(
            super::plan(&config, None, true, &none).targets.is_empty(),
            "an unreadable policy: nothing is guessed"
        );
        assert_eq!(plan.definitions_enabled, Some(false));
    }

    #[test]
    fn proxy_precedence_and_password_override() {
        let env = env_of(&[("HTTPS_PROXY", "http://envuser:envpw@env.proxy:8080")]);
        let p = policy(None, true, Some(policy_proxy()));

        let config =
            Config::from_yaml("proxy: {url: 'http://cfg.proxy:3128', username: u, password: pw}")
                .expect("config");
        let proxy = proxy_for(&config, Some(&p), &env, "h").expect("proxy");
        assert_eq!(
            (proxy.source, proxy.label().as_str()),
            (ProxySource::Config, "cfg.proxy:3128")
        );
        assert_eq!(
            proxy
                .credentials
                .as_ref()
                .map(|(u, s)| (u.as_str(), s.expose())),
            Some(("u", "pw"))
        );

        let config = Config::from_yaml("proxy: {password: better}").expect("config");
        let proxy = proxy_for(&config, Some(&p), &env, "h").expect("proxy");
        assert_eq!(proxy.source, ProxySource::Policy);
        assert_eq!(proxy.label(), "proxy.corp:3128");
        assert_eq!(
            proxy
                .credentials
                .as_ref()
                .map(|(u, s)| (u.as_str(), s.expose())),
            Some(("svc", "better")),
            "a configured password wins over the policy's"
        );

        let config = Config::from_yaml("{}").expect("config");
        let proxy = proxy_for(&config, None, &env, "h").expect("proxy");
        assert_eq!(proxy.source, ProxySource::Environment);
        assert_eq!(proxy.label(), "env.proxy:8080");
        assert_eq!(
            proxy
                .credentials
                .as_ref()
                .map(|(u, s)| (u.as_str(), s.expose())),
            Some(("envuser", "envpw"))
        );

        let config = Config::from_yaml("proxy: {from_policy: false, from_environment: false}")
            .expect("config");
        assert_eq!(proxy_for(&config, Some(&p), &env, "h"), None);
    }

    #[test]
    fn policy_without_auth_sends_no_credentials() {
        let none = env_of(&[]);
        let mut proxy = policy_proxy();
        proxy.auth_type = Some(0);
        proxy.port = None;
        proxy.server = "10.1.2.3:8080".to_string();
        let p = policy(None, true, Some(proxy));
        let config = Config::from_yaml("{}").expect("config");
        let spec = proxy_for(&config, Some(&p), &none, "h").expect("proxy");
        assert_eq!(spec.label(), "10.1.2.3:8080");
        assert_eq!(spec.credentials, None);
    }

    #[test]
    fn compare_direct_adds_the_direct_route() {
        let none = env_of(&[]);
        let config = Config::from_yaml("proxy: {url: 'http://p:3128', compare_direct: true}")
            .expect("config");
        let plan = plan(&config, None, false, &none);
        let routes: Vec<_> = plan
            .targets
            .iter()
            .map(|t| t.route.route().as_str())
            .collect();
        assert_eq!(routes, vec!["proxy", "direct"]);
        assert_eq!(plan.proxies.len(), 1);
    }

    #[test]
    fn no_proxy_matching() {
        assert!(excluded_by_no_proxy("a.example.com", "example.com"));
        assert!(excluded_by_no_proxy("a.example.com", " .example.com "));
        assert!(excluded_by_no_proxy(
            "example.com",
            "localhost,example.com:443"
        ));
        assert!(excluded_by_no_proxy("anything", "*"));
        assert!(!excluded_by_no_proxy("badexample.com", "example.com"));
        assert!(!excluded_by_no_proxy("a.example.com", ""));
        let env = env_of(&[("https_proxy", "env.proxy:3128"), ("no_proxy", "cisco.com")]);
        let config = Config::from_yaml("{}").expect("config");
        assert_eq!(
            proxy_for(&config, None, &env, "tetra-defs.amp.cisco.com"),
            None
        );
        assert!(proxy_for(&config, None, &env, "other.example").is_some());
    }

    #[test]
    fn other_schemes_in_the_environment_are_not_used() {
        let env = env_of(&[("HTTPS_PROXY", "socks5://s:1080")]);
        let config = Config::from_yaml("{}").expect("config");
        assert_eq!(proxy_for(&config, None, &env, "h"), None);
    }
}
