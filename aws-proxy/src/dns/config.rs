//! The DNS role's command line and what it says: the proxy's address, the upstream resolvers.

use std::{
    fmt, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6},
};

use hickory_proto::rr::Name;

use super::Transport;

/// The DNS role: where to listen, what amazonaws.com names resolve to, and where the rest goes.
#[derive(clap::Args, Debug, Clone)]
pub struct DnsArgs {
    /// Where to listen, UDP and TCP.
    #[arg(long = "dns-listen", env = "AWS_PROXY_DNS_LISTEN", default_value = "0.0.0.0:53")]
    pub listen: SocketAddr,

    /// The proxy's address that amazonaws.com names resolve to: IPs (v4 and/or v6) or one DNS
    /// name such as the proxy Service's (repeatable / comma-separated).
    #[arg(
        long = "proxy-address",
        env = "AWS_PROXY_ADDRESS",
        value_delimiter = ',',
        required = true
    )]
    pub proxy_address: Vec<String>,

    /// Upstream resolvers for every other name, `ip` or `ip:port`, tried in order
    /// (default: the `nameserver` lines of /etc/resolv.conf, port 53).
    #[arg(long = "upstream", env = "AWS_PROXY_DNS_UPSTREAM", value_delimiter = ',', value_parser = parse_upstream)]
    pub upstream: Vec<SocketAddr>,

    /// TTL in seconds of the answers for amazonaws.com names.
    #[arg(long = "dns-ttl", env = "AWS_PROXY_DNS_TTL", default_value_t = 30)]
    pub ttl: u32,

    /// Time allowed for one attempt at one upstream, in milliseconds.
    #[arg(long = "upstream-timeout-ms", env = "AWS_PROXY_DNS_UPSTREAM_TIMEOUT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub upstream_timeout_ms: u64,

    /// Time allowed for all upstream attempts of one query, in milliseconds; then the client
    /// gets SERVFAIL.
    #[arg(long = "upstream-deadline-ms", env = "AWS_PROXY_DNS_UPSTREAM_DEADLINE_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub upstream_deadline_ms: u64,
}

/// `10.96.0.10` → `10.96.0.10:53`; `10.96.0.10:5353` and `[fd00::a]:53` as given.
fn parse_upstream(value: &str) -> Result<SocketAddr, String> {
    let value = value.trim();
    value
        .parse::<SocketAddr>()
        .or_else(|_| value.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| {
            format!("{value:?} is not an IP address or IP:port (e.g. 10.96.0.10 or 10.96.0.10:53)")
        })
}
/// What amazonaws.com names resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ProxyAddress {
    Ips {
        v4: Vec<Ipv4Addr>,
        v6: Vec<Ipv6Addr>,
    },
    /// A CNAME to this name, followed by its addresses as the upstream resolves them.
    Name(Name),
}

impl fmt::Display for ProxyAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ips { v4, v6 } => {
                let ips: Vec<String> = v4
                    .iter()
                    .map(ToString::to_string)
                    .chain(v6.iter().map(ToString::to_string))
                    .collect();
                f.write_str(&ips.join(","))
            }
            Self::Name(name) => write!(f, "{name}"),
        }
    }
}

/// Why the DNS server could not start; each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum DnsSetupError {
    #[error("--proxy-address is empty: give the proxy's IPs or its Service name (e.g. aws-proxy.<namespace>.svc.cluster.local)")]
    NoProxyAddress,
    #[error("--proxy-address mixes IPs and DNS names ({0}): give either IPs or one DNS name")]
    MixedProxyAddress(String),
    #[error("--proxy-address gives several DNS names ({0}): give one name (a Service name already resolves to all its IPs)")]
    SeveralProxyNames(String),
    #[error("--proxy-address {0:?} is neither an IP address nor a valid DNS name")]
    InvalidProxyName(String),
    #[error(
        "--proxy-address {0:?} is a single label, and no search list applies here: give the fully qualified name, e.g. aws-proxy.<namespace>.svc.cluster.local"
    )]
    UnqualifiedProxyName(String),
    #[error("--proxy-address {0} is under amazonaws.com, which this server answers with the proxy itself: give the proxy Service's name or IPs")]
    ProxyNameIsAws(String),
    #[error("cannot read {path} to find the upstream resolvers ({source}): pass --upstream (or AWS_PROXY_DNS_UPSTREAM), e.g. the cluster DNS 10.96.0.10")]
    ResolvConf { path: String, source: io::Error },
    #[error("no upstream resolver: {0} has no usable `nameserver` line; pass --upstream (or AWS_PROXY_DNS_UPSTREAM), e.g. the cluster DNS 10.96.0.10")]
    NoUpstream(String),
    #[error("upstream {0} is this server's own listen address, so queries would loop: pass the cluster DNS with --upstream")]
    UpstreamIsSelf(SocketAddr),
    #[error("binding {addr} ({protocol}) needs root or CAP_NET_BIND_SERVICE: grant the capability, or listen on a port >= 1024 with --dns-listen")]
    BindPermission { addr: SocketAddr, protocol: Transport },
    #[error("{addr} ({protocol}) is already in use: stop whatever listens there, or choose another --dns-listen")]
    BindInUse { addr: SocketAddr, protocol: Transport },
    #[error("cannot listen on {addr} ({protocol}): {source}; check --dns-listen")]
    Bind { addr: SocketAddr, protocol: Transport, source: io::Error },
}

/// IPs (any mix of v4 and v6) or exactly one DNS name; blanks are ignored.
pub(super) fn parse_proxy_address(values: &[String]) -> Result<ProxyAddress, DnsSetupError> {
    let values: Vec<&str> =
        values.iter().map(|value| value.trim()).filter(|value| !value.is_empty()).collect();
    let (ips, names): (Vec<&str>, Vec<&str>) =
        values.iter().partition(|value| value.parse::<IpAddr>().is_ok());
    match (ips.is_empty(), names.as_slice()) {
        (true, []) => Err(DnsSetupError::NoProxyAddress),
        (false, []) => {
            let (mut v4, mut v6) = (Vec::new(), Vec::new());
            for ip in ips.iter().filter_map(|ip| ip.parse::<IpAddr>().ok()) {
                match ip {
                    IpAddr::V4(ip) if !v4.contains(&ip) => v4.push(ip),
                    IpAddr::V6(ip) if !v6.contains(&ip) => v6.push(ip),
                    _ => {}
                }
            }
            Ok(ProxyAddress::Ips { v4, v6 })
        }
        (true, [name]) => parse_proxy_name(name).map(ProxyAddress::Name),
        (true, _) => Err(DnsSetupError::SeveralProxyNames(names.join(", "))),
        (false, _) => Err(DnsSetupError::MixedProxyAddress(values.join(", "))),
    }
}

fn parse_proxy_name(value: &str) -> Result<Name, DnsSetupError> {
    let invalid = || DnsSetupError::InvalidProxyName(value.to_owned());
    let trimmed = value.strip_suffix('.').unwrap_or(value);
    let plain_labels = trimmed.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if trimmed.is_empty() || trimmed.len() > 253 || !plain_labels {
        return Err(invalid());
    }
    if !trimmed.contains('.') {
        return Err(DnsSetupError::UnqualifiedProxyName(value.to_owned()));
    }
    if crate::is_aws_host(trimmed) {
        return Err(DnsSetupError::ProxyNameIsAws(value.to_owned()));
    }
    let mut name = Name::from_ascii(trimmed).map_err(|_| invalid())?;
    name.set_fqdn(true);
    Ok(name)
}

/// The `nameserver` lines of a resolv.conf, port 53. Link-local IPv6 addresses need a numeric
/// zone (`fe80::1%2`); named zones are skipped.
pub(crate) fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            let addr = words.next()?;
            match addr.split_once('%') {
                None => addr.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)),
                Some((ip, zone)) => {
                    let (ip, zone) = (ip.parse::<Ipv6Addr>().ok()?, zone.parse::<u32>().ok()?);
                    Some(SocketAddr::V6(SocketAddrV6::new(ip, 53, 0, zone)))
                }
            }
        })
        .collect()
}

pub(super) fn upstreams_from_resolv_conf(path: &str) -> Result<Vec<SocketAddr>, DnsSetupError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| DnsSetupError::ResolvConf { path: path.to_owned(), source })?;
    let upstreams = parse_resolv_conf(&text);
    if upstreams.is_empty() {
        return Err(DnsSetupError::NoUpstream(path.to_owned()));
    }
    Ok(upstreams)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| value.to_string()).collect()
    }

    #[test]
    fn proxy_address_ips_or_one_name() {
        assert_eq!(
            parse_proxy_address(&strings(&["10.0.0.1", " fd00::1 ", "10.0.0.2", "10.0.0.1", ""]))
                .unwrap(),
            ProxyAddress::Ips {
                v4: vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)],
                v6: vec!["fd00::1".parse().unwrap()]
            }
        );
        let ProxyAddress::Name(name) =
            parse_proxy_address(&strings(&["aws-proxy.intentmap.svc.cluster.local"])).unwrap()
        else {
            panic!("a DNS name should give ProxyAddress::Name");
        };
        assert_eq!(name.to_ascii(), "aws-proxy.intentmap.svc.cluster.local.");
        assert!(name.is_fqdn());

        for (values, expected) in [
            (&[][..], "--proxy-address is empty"),
            (&["", " "][..], "--proxy-address is empty"),
            (&["10.0.0.1", "proxy.svc"][..], "mixes IPs and DNS names"),
            (&["a.svc", "b.svc"][..], "several DNS names"),
            (&["[fd00::1]"][..], "neither an IP address nor a valid DNS name"),
            (&["10.0.0.1:443"][..], "neither an IP address nor a valid DNS name"),
            (&["a..b"][..], "neither an IP address nor a valid DNS name"),
            (&["proxy.amazonaws.com"][..], "is under amazonaws.com"),
            (&["aws-proxy"][..], "give the fully qualified name"),
        ] {
            let error = parse_proxy_address(&strings(values)).unwrap_err().to_string();
            assert!(error.contains(expected), "{values:?}: {error}");
        }
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver   fd00::a \n\
                    options ndots:5\nnameserver fe80::1%2\nnameserver fe80::2%eth0\nnameserver bogus\n;nameserver 1.1.1.1\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "10.96.0.10:53".parse().unwrap(),
                "[fd00::a]:53".parse().unwrap(),
                SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, 2)),
            ]
        );
        assert!(parse_resolv_conf("search cluster.local\n").is_empty());
    }

    #[test]
    fn upstream_port_defaults_to_53() {
        assert_eq!(parse_upstream("10.96.0.10").unwrap(), "10.96.0.10:53".parse().unwrap());
        assert_eq!(parse_upstream(" 10.96.0.10:5353").unwrap(), "10.96.0.10:5353".parse().unwrap());
        assert_eq!(parse_upstream("fd00::a").unwrap(), "[fd00::a]:53".parse().unwrap());
        assert!(parse_upstream("kube-dns").unwrap_err().contains("not an IP address"));
    }
}
