//! Outbound HTTP: which destinations a guest may reach, from the rules of `[outbound] allow`.
//!
//! A request is checked twice: by its URL before DNS ([`AllowList::check_url`]: is the scheme,
//! host and port listed at all) and by each address the host resolved to, before connecting
//! ([`AllowList::check_address`]). The second check is what keeps guests off the host's own
//! network: any name (even a listed one) can resolve to 127.0.0.1, a private address or the cloud
//! metadata address, so such addresses are refused whatever name led to them, unless a rule names
//! the address itself as an IP literal. Listing `http://localhost:9000` therefore does not reach
//! 127.0.0.1; listing `http://127.0.0.1:9000` does.
//!
//! Pure: no I/O. The host resolves names and connects; this only decides.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The two schemes a guest may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// The port a URL or rule without one means.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// `http` or `https`, in any case (schemes are case-insensitive).
    fn parse(s: &str) -> Option<Scheme> {
        if s.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else if s.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else {
            None
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        })
    }
}

/// The hosts a rule admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this name: lower case, without a trailing dot.
    Name(String),
    /// `*.suffix`: any name one or more labels below `suffix` (stored without `*.`), but not
    /// `suffix` itself, so that a wildcard never widens to the bare domain by accident.
    Subdomains(String),
    /// This address; an IPv4 address also matches its IPv4-mapped IPv6 form, since both reach
    /// the same host.
    Ip(IpAddr),
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Name(name) => f.write_str(name),
            HostPattern::Subdomains(suffix) => write!(f, "*.{suffix}"),
            HostPattern::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            HostPattern::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// One entry of `[outbound] allow`: `scheme://host[:port]`, like `https://api.example.com`,
/// `http://127.0.0.1:9000`, `https://*.example.org:8443` or `http://[::1]:8080`.
///
/// Serialized as that string (the host stores it in its database as JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    scheme: Scheme,
    host: HostPattern,
    /// As written: `None` means the scheme's default port, and displays without one.
    port: Option<u16>,
}

impl Rule {
    /// The scheme the rule admits.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The hosts the rule admits.
    pub fn host(&self) -> &HostPattern {
        &self.host
    }

    /// The port the rule admits: the one written, or the scheme's default.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(self.scheme.default_port())
    }

    /// The narrowest rule that admits `scheme://host:port`: what a refusal suggests listing.
    fn exact(scheme: Scheme, host: HostPattern, port: u16) -> Rule {
        let port = (port != scheme.default_port()).then_some(port);
        Rule { scheme, host, port }
    }

    fn matches(&self, scheme: Scheme, host: &Host, port: u16) -> bool {
        let host_matches = match (&self.host, host) {
            (HostPattern::Name(rule), Host::Name(name)) => rule == name,
            (HostPattern::Subdomains(suffix), Host::Name(name)) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|below| below.len() > 1 && below.ends_with('.')),
            (HostPattern::Ip(rule), Host::Ip(ip)) => rule.to_canonical() == ip.to_canonical(),
            _ => false,
        };
        host_matches && self.scheme == scheme && self.port() == port
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// Why a rule could not be parsed: the rule as written (at most 100 characters) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{rule}`: {reason}")]
pub struct RuleError {
    pub rule: String,
    pub reason: &'static str,
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Rule, RuleError> {
        parse_rule(s).map_err(|reason| RuleError {
            rule: s.chars().take(100).collect(),
            reason,
        })
    }
}

fn parse_rule(s: &str) -> Result<Rule, &'static str> {
    let (scheme, rest) = s
        .split_once("://")
        .ok_or("a rule is scheme://host or scheme://host:port, like https://api.example.com")?;
    let scheme = Scheme::parse(scheme).ok_or("the scheme must be http or https")?;
    // A lone trailing slash is the empty path: allowed, since URLs are often copied with it.
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('@') {
        return Err("a rule has no user name or password");
    }
    if authority.contains(['/', '?', '#']) {
        return Err("a rule has no path, query or fragment: it names a host and a port only");
    }
    let (host, port) = split_host_port(authority)?;
    let port = port
        .map(|port| {
            port.parse::<u16>()
                .ok()
                .filter(|&port| port != 0)
                .ok_or("the port must be a number from 1 to 65535")
        })
        .transpose()?;
    Ok(Rule { scheme, host, port })
}

/// A rule's `host[:port]` or `[ipv6][:port]`: the host, and the port's text if there is one.
fn split_host_port(authority: &str) -> Result<(HostPattern, Option<&str>), &'static str> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (ip, after) = bracketed
            .split_once(']')
            .ok_or("an IPv6 address in brackets lacks its closing ]")?;
        let ip =
            Ipv6Addr::from_str(ip).map_err(|_| "the address in brackets is not an IPv6 address")?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("only a :port may follow an IPv6 address in brackets")?,
            ),
        };
        return Ok((HostPattern::Ip(IpAddr::V6(ip)), port));
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if port.is_some_and(|port| port.contains(':')) {
        return Err("IPv6 addresses go in brackets, like http://[::1]:8080");
    }
    Ok((parse_host_pattern(host)?, port))
}

/// A rule's host: an IPv4 literal, `*.name` or a name.
fn parse_host_pattern(host: &str) -> Result<HostPattern, &'static str> {
    if let Ok(ip) = Ipv4Addr::from_str(host) {
        return Ok(HostPattern::Ip(IpAddr::V4(ip)));
    }
    let pattern = match host.strip_prefix("*.") {
        Some(suffix) => host_name(suffix).map(HostPattern::Subdomains),
        None => host_name(host).map(HostPattern::Name),
    };
    pattern.ok_or(if host.is_empty() {
        "the host is missing"
    } else if host.contains('*') {
        "a wildcard is allowed only as the whole first label, like https://*.example.org"
    } else {
        "the host is neither a host name nor an IP address"
    })
}

/// `s` as a DNS host name, lower case and without its trailing dot, if it is one: labels of
/// letters, digits, `-` and `_`, 1 to 63 bytes each, at most 253 bytes in all, and the last label
/// not all digits (resolvers read a name like `127.1` as an address).
pub(crate) fn host_name(s: &str) -> Option<String> {
    let s = s.strip_suffix('.').unwrap_or(s);
    let labels_ok = s.split('.').all(|label| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    let last_not_numeric = s
        .rsplit('.')
        .next()
        .is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()));
    (s.len() <= 253 && labels_ok && last_not_numeric).then(|| s.to_ascii_lowercase())
}

impl Serialize for Rule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Rule, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The host of a URL a guest asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// Lower case, without a trailing dot.
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// A URL's host, with or without the brackets around an IPv6 address.
    fn parse(host: &str) -> Option<Host> {
        if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return Ipv6Addr::from_str(inner).ok().map(|ip| Host::Ip(ip.into()));
        }
        if let Ok(ip) = IpAddr::from_str(host) {
            return Some(Host::Ip(ip));
        }
        host_name(host).map(Host::Name)
    }

    fn pattern(&self) -> HostPattern {
        match self {
            Host::Name(name) => HostPattern::Name(name.clone()),
            Host::Ip(ip) => HostPattern::Ip(*ip),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.pattern().fmt(f)
    }
}

/// A destination [`AllowList::check_url`] admitted: where to resolve and connect, and what
/// [`AllowList::check_address`] needs to judge each resolved address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    scheme: Scheme,
    host: Host,
    port: u16,
    /// Whether the URL had a port: only for showing the URL as the guest wrote it.
    explicit_port: bool,
}

impl Destination {
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// What to resolve: the name (lower case, without a trailing dot) or the address, as text
    /// without brackets.
    pub fn host(&self) -> String {
        match &self.host {
            Host::Name(name) => name.clone(),
            Host::Ip(ip) => ip.to_string(),
        }
    }

    /// The address, when the URL's host is one (no DNS needed).
    pub fn ip(&self) -> Option<IpAddr> {
        match self.host {
            Host::Ip(ip) => Some(ip),
            Host::Name(_) => None,
        }
    }

    /// The port to connect to: the URL's, or the scheme's default.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// The URL's origin with a `/`, as in refusals: `http://localhost:9000/`.
impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if self.explicit_port {
            write!(f, ":{}", self.port)?;
        }
        f.write_str("/")
    }
}

/// What makes an address unfit to reach from a guest unless listed: it leads into the host's own
/// machine or network rather than to the public internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16; IPv6 unique local fc00::/7 and the old site-local fec0::/10.
    Private,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// 169.254.169.254 and fd00:ec2::254, where clouds serve instance credentials.
    Metadata,
    /// 0.0.0.0/8 and ::, which Linux connects to the local machine.
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// 224/4, ff00::/8.
    Multicast,
    /// 100.64/10, the carrier-grade NAT range shared inside a provider's network.
    SharedNat,
    /// 240/4 and the deprecated IPv4-compatible IPv6 addresses ::/96.
    Reserved,
}

impl AddressKind {
    /// The kind of `addr`, or `None` for an ordinary public address. IPv4 addresses embedded in
    /// IPv6 (IPv4-mapped ::ffff:0:0/96 and NAT64 64:ff9b::/96) are judged by the IPv4 address
    /// they lead to.
    pub fn of(addr: IpAddr) -> Option<AddressKind> {
        match addr {
            IpAddr::V4(ip) => Self::of_v4(ip),
            IpAddr::V6(ip) => Self::of_v6(ip),
        }
    }

    fn of_v4(ip: Ipv4Addr) -> Option<AddressKind> {
        let [a, b, ..] = ip.octets();
        let kind = if ip == Ipv4Addr::new(169, 254, 169, 254) {
            AddressKind::Metadata
        } else if ip.is_loopback() {
            AddressKind::Loopback
        } else if ip.is_private() {
            AddressKind::Private
        } else if ip.is_link_local() {
            AddressKind::LinkLocal
        } else if a == 0 {
            AddressKind::Unspecified
        } else if ip.is_broadcast() {
            AddressKind::Broadcast
        } else if ip.is_multicast() {
            AddressKind::Multicast
        } else if a == 100 && (64..128).contains(&b) {
            AddressKind::SharedNat
        } else if a >= 240 {
            AddressKind::Reserved
        } else {
            return None;
        };
        Some(kind)
    }

    fn of_v6(ip: Ipv6Addr) -> Option<AddressKind> {
        if let Some(v4) = ip.to_ipv4_mapped() {
            return Self::of_v4(v4);
        }
        let segments = ip.segments();
        if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
            let [.., a, b, c, d] = ip.octets();
            return Self::of_v4(Ipv4Addr::new(a, b, c, d));
        }
        let kind = if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
            AddressKind::Metadata
        } else if ip.is_loopback() {
            AddressKind::Loopback
        } else if ip.is_unspecified() {
            AddressKind::Unspecified
        } else if segments[..6] == [0; 6] {
            AddressKind::Reserved
        } else if ip.is_unique_local() || segments[0] & 0xffc0 == 0xfec0 {
            AddressKind::Private
        } else if ip.is_unicast_link_local() {
            AddressKind::LinkLocal
        } else if ip.is_multicast() {
            AddressKind::Multicast
        } else {
            return None;
        };
        Some(kind)
    }
}

/// "a loopback address" and the like, as refusals say it.
impl fmt::Display for AddressKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressKind::Loopback => "a loopback address",
            AddressKind::Private => "a private address",
            AddressKind::LinkLocal => "a link-local address",
            AddressKind::Metadata => "the cloud metadata address",
            AddressKind::Unspecified => "an unspecified address",
            AddressKind::Broadcast => "the broadcast address",
            AddressKind::Multicast => "a multicast address",
            AddressKind::SharedNat => "a carrier-grade NAT address",
            AddressKind::Reserved => "a reserved address",
        })
    }
}

/// Why a guest may not reach a destination, in words for the guest's author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The URL's scheme is neither http nor https. `url` is at most 100 characters of the origin.
    #[error("{url} is refused: only http and https URLs can be fetched")]
    Scheme { url: String },
    /// The URL's host is neither a host name nor an IP address.
    #[error("{url} is refused: its host is neither a host name nor an IP address")]
    Host { url: String },
    /// No rule admits the URL's scheme, host and port.
    #[error("{url} is refused: add {suggestion} to [outbound] allow to reach it")]
    NotListed { url: String, suggestion: String },
    /// The host resolved to a special address that no rule names.
    #[error(
        "{url} is refused: {host} resolves to {addr}, {kind}; list {suggestion} in \
         [outbound] allow to reach it"
    )]
    Address {
        url: String,
        host: String,
        addr: IpAddr,
        kind: AddressKind,
        suggestion: String,
    },
}

/// The rules of `[outbound] allow`; empty (the default) refuses everything.
///
/// Serialized as the list of rule strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AllowList(Vec<Rule>);

impl AllowList {
    pub fn new(rules: Vec<Rule>) -> AllowList {
        AllowList(rules)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.0
    }

    /// Whether some rule admits a URL, given its parts as a URL parser gives them: the scheme,
    /// the host (an IPv6 address with or without brackets) and the port if the URL has one. Host
    /// names match case-insensitively and with or without a trailing dot.
    pub fn check_url(
        &self,
        scheme: &str,
        host: &str,
        port: Option<u16>,
    ) -> Result<Destination, Refused> {
        let written = || {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{scheme}://{host}{port}/")
                .chars()
                .take(100)
                .collect()
        };
        let scheme = Scheme::parse(scheme).ok_or_else(|| Refused::Scheme { url: written() })?;
        let host = Host::parse(host).ok_or_else(|| Refused::Host { url: written() })?;
        let destination = Destination {
            scheme,
            port: port.unwrap_or(scheme.default_port()),
            explicit_port: port.is_some(),
            host,
        };
        if self.admits(&destination.host, &destination) {
            Ok(destination)
        } else {
            Err(Refused::NotListed {
                url: destination.to_string(),
                suggestion: Rule::exact(scheme, destination.host.pattern(), destination.port)
                    .to_string(),
            })
        }
    }

    /// Whether the host may connect to `addr`, one of the addresses `destination`'s host resolved
    /// to (or its address, for an IP literal). An ordinary public address is fine; a special one
    /// (see [`AddressKind`]) only if a rule names it as an IP literal with the destination's
    /// scheme and port. A rule naming a host, even `localhost`, never admits a special address.
    pub fn check_address(&self, destination: &Destination, addr: IpAddr) -> Result<(), Refused> {
        let Some(kind) = AddressKind::of(addr) else {
            return Ok(());
        };
        if self.admits(&Host::Ip(addr), destination) {
            return Ok(());
        }
        Err(Refused::Address {
            url: destination.to_string(),
            host: destination.host(),
            addr,
            kind,
            suggestion: Rule::exact(
                destination.scheme,
                HostPattern::Ip(addr.to_canonical()),
                destination.port,
            )
            .to_string(),
        })
    }

    /// Whether some rule admits `host` with `destination`'s scheme and port.
    fn admits(&self, host: &Host, destination: &Destination) -> bool {
        self.0
            .iter()
            .any(|rule| rule.matches(destination.scheme, host, destination.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(rules: &[&str]) -> AllowList {
        AllowList::new(rules.iter().map(|r| r.parse().unwrap()).collect())
    }

    #[test]
    fn rules_parse_and_display() {
        // (written, displayed)
        let cases = [
            ("https://api.example.com", "https://api.example.com"),
            ("https://api.example.com/", "https://api.example.com"),
            ("HTTPS://API.Example.COM", "https://api.example.com"),
            ("https://api.example.com.", "https://api.example.com"),
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
            ("https://*.example.org:8443", "https://*.example.org:8443"),
            ("http://[::1]:8080", "http://[::1]:8080"),
            ("http://[::1]", "http://[::1]"),
            ("http://[::ffff:127.0.0.1]", "http://[::ffff:127.0.0.1]"),
            ("http://localhost", "http://localhost"),
            ("https://example.com:443", "https://example.com:443"),
            ("http://my_host.internal", "http://my_host.internal"),
        ];
        for (written, displayed) in cases {
            let rule: Rule = written.parse().unwrap_or_else(|e| panic!("{written}: {e}"));
            assert_eq!(rule.to_string(), displayed, "{written}");
            assert_eq!(displayed.parse::<Rule>().unwrap(), rule, "{written}");
        }
    }

    #[test]
    fn rule_parts() {
        let rule: Rule = "https://*.example.org:8443".parse().unwrap();
        assert_eq!(rule.scheme(), Scheme::Https);
        assert_eq!(
            rule.host(),
            &HostPattern::Subdomains("example.org".to_owned())
        );
        assert_eq!(rule.port(), 8443);
        let rule: Rule = "http://[::1]".parse().unwrap();
        assert_eq!(rule.host(), &HostPattern::Ip("::1".parse().unwrap()));
        assert_eq!(rule.port(), 80);
        assert_eq!("https://x.dev".parse::<Rule>().unwrap().port(), 443);
    }

    #[test]
    fn bad_rules() {
        // (written, what the error says)
        let cases = [
            ("ftp://x", "the scheme must be http or https"),
            ("api.example.com", "a rule is scheme://host"),
            ("", "a rule is scheme://host"),
            ("https://", "the host is missing"),
            ("https://:8080", "the host is missing"),
            ("https://example.com/api", "no path"),
            ("https://example.com?a=1", "no path"),
            ("https://example.com#x", "no path"),
            ("https://example.com//", "no path"),
            ("https://user:pw@example.com", "no user name"),
            ("https://example.com:0", "port must be a number"),
            ("https://example.com:65536", "port must be a number"),
            ("https://example.com:", "port must be a number"),
            ("https://example.com:http", "port must be a number"),
            ("https://*.example.*", "wildcard"),
            ("https://a.*.example.org", "wildcard"),
            ("https://*example.org", "wildcard"),
            ("https://*", "wildcard"),
            ("https://*.", "wildcard"),
            ("http://::1", "IPv6 addresses go in brackets"),
            ("http://[::1", "closing ]"),
            ("http://[127.0.0.1]", "not an IPv6 address"),
            ("http://[::1]8080", "only a :port"),
            ("http://127.1", "neither a host name nor an IP address"),
            ("http://256.0.0.1", "neither a host name nor an IP address"),
            (
                "http://exa mple.com",
                "neither a host name nor an IP address",
            ),
            ("http://a..b", "neither a host name nor an IP address"),
            ("http://é.com", "neither a host name nor an IP address"),
            (
                "http://example.com..",
                "neither a host name nor an IP address",
            ),
        ];
        for (written, reason) in cases {
            let error = written.parse::<Rule>().unwrap_err();
            assert!(
                error.to_string().contains(reason),
                "{written}: {error} (expected {reason:?})"
            );
            assert!(error.to_string().starts_with(&format!("`{written}`")));
        }
        let long = format!("https://{}.com", "a".repeat(300));
        assert!(long.parse::<Rule>().is_err());
        assert_eq!(
            "ftp://x".parse::<Rule>().unwrap_err().to_string(),
            "`ftp://x`: the scheme must be http or https"
        );
    }

    #[test]
    fn check_url() {
        let allow = list(&[
            "https://api.example.com",
            "http://127.0.0.1:9000",
            "https://*.example.org:8443",
            "http://[::1]:8080",
            "http://localhost:3000",
        ]);
        // (scheme, host, port, admitted)
        let cases: &[(&str, &str, Option<u16>, bool)] = &[
            ("https", "api.example.com", None, true),
            ("https", "api.example.com", Some(443), true),
            ("HTTPS", "API.EXAMPLE.COM", None, true),
            ("https", "api.example.com.", None, true),
            ("https", "api.example.com", Some(8443), false),
            ("http", "api.example.com", None, false),
            ("https", "example.com", None, false),
            ("https", "x.api.example.com", None, false),
            ("http", "127.0.0.1", Some(9000), true),
            ("http", "127.0.0.1", None, false),
            ("https", "127.0.0.1", Some(9000), false),
            ("http", "[::ffff:127.0.0.1]", Some(9000), true),
            ("http", "127.0.0.2", Some(9000), false),
            ("https", "a.example.org", Some(8443), true),
            ("https", "a.b.example.org", Some(8443), true),
            ("https", "A.Example.Org.", Some(8443), true),
            ("https", "example.org", Some(8443), false),
            ("https", "a.example.org", None, false),
            ("https", "badexample.org", Some(8443), false),
            ("https", ".example.org", Some(8443), false),
            ("http", "[::1]", Some(8080), true),
            ("http", "::1", Some(8080), true),
            ("http", "[0:0:0:0:0:0:0:1]", Some(8080), true),
            ("http", "[::1]", None, false),
            ("http", "localhost", Some(3000), true),
            ("http", "LOCALHOST.", Some(3000), true),
            ("http", "127.0.0.1", Some(3000), false),
        ];
        for &(scheme, host, port, admitted) in cases {
            let result = allow.check_url(scheme, host, port);
            assert_eq!(
                result.is_ok(),
                admitted,
                "{scheme}://{host} {port:?}: {result:?}"
            );
        }
        assert!(
            AllowList::default()
                .check_url("https", "example.com", None)
                .is_err()
        );
    }

    #[test]
    fn url_refusals() {
        let allow = list(&["https://api.example.com"]);
        let cases = [
            (
                ("ftp", "x", None),
                "ftp://x/ is refused: only http and https URLs can be fetched",
            ),
            (
                ("http", "exa mple", None),
                "http://exa mple/ is refused: its host is neither a host name nor an IP address",
            ),
            (
                ("http", "api.example.com", None),
                "http://api.example.com/ is refused: add http://api.example.com to [outbound] \
                 allow to reach it",
            ),
            (
                ("https", "API.example.com", Some(8443)),
                "https://api.example.com:8443/ is refused: add https://api.example.com:8443 to \
                 [outbound] allow to reach it",
            ),
            (
                ("http", "::1", Some(80)),
                "http://[::1]:80/ is refused: add http://[::1] to [outbound] allow to reach it",
            ),
        ];
        for ((scheme, host, port), message) in cases {
            let refused = allow.check_url(scheme, host, port).unwrap_err();
            assert_eq!(refused.to_string(), message);
        }
    }

    #[test]
    fn destination() {
        let allow = list(&["http://localhost:9000", "https://[::1]"]);
        let d = allow.check_url("http", "LocalHost.", Some(9000)).unwrap();
        assert_eq!(d.scheme(), Scheme::Http);
        assert_eq!(d.host(), "localhost");
        assert_eq!(d.port(), 9000);
        assert_eq!(d.ip(), None);
        assert_eq!(d.to_string(), "http://localhost:9000/");
        let d = allow.check_url("https", "[::1]", None).unwrap();
        assert_eq!(d.host(), "::1");
        assert_eq!(d.port(), 443);
        assert_eq!(d.ip(), Some("::1".parse().unwrap()));
        assert_eq!(d.to_string(), "https://[::1]/");
    }

    #[test]
    fn address_kinds() {
        use AddressKind::*;
        let cases: &[(&str, Option<AddressKind>)] = &[
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("64:ff9b::127.0.0.1", Some(Loopback)),
            ("10.1.2.3", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:192.168.0.1", Some(Private)),
            ("fc00::1", Some(Private)),
            ("fd12:3456::1", Some(Private)),
            ("fec0::1", Some(Private)),
            ("169.254.1.1", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("::ffff:169.254.1.1", Some(LinkLocal)),
            ("169.254.169.254", Some(Metadata)),
            ("::ffff:169.254.169.254", Some(Metadata)),
            ("fd00:ec2::254", Some(Metadata)),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("255.255.255.255", Some(Broadcast)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("100.64.0.1", Some(SharedNat)),
            ("100.127.255.255", Some(SharedNat)),
            ("::ffff:100.64.0.1", Some(SharedNat)),
            ("240.0.0.1", Some(Reserved)),
            ("::127.0.0.1", Some(Reserved)),
            ("::2", Some(Reserved)),
            // Ordinary public addresses, including the neighbours of special ranges.
            ("93.184.216.34", None),
            ("8.8.8.8", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("169.253.255.255", None),
            ("223.255.255.255", None),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::8.8.8.8", None),
            ("2606:4700::1111", None),
            ("fe00::1", None),
            ("fbff::1", None),
        ];
        for &(addr, kind) in cases {
            let ip: IpAddr = addr.parse().unwrap();
            assert_eq!(AddressKind::of(ip), kind, "{addr}");
        }
    }

    #[test]
    fn check_address() {
        let allow = list(&[
            "https://api.example.com",
            "http://localhost:9000",
            "http://127.0.0.1:9000",
            "http://169.254.169.254",
            "http://[fd00::1]:8080",
            "http://internal.example.com",
        ]);
        // (scheme, host, port, resolved address, admitted)
        let cases: &[(&str, &str, Option<u16>, &str, bool)] = &[
            // A public address behind a listed name.
            ("https", "api.example.com", None, "93.184.216.34", true),
            ("https", "api.example.com", None, "2606:4700::1111", true),
            // A listed name that resolves to a special address (DNS rebinding included).
            ("https", "api.example.com", None, "127.0.0.1", false),
            ("https", "api.example.com", None, "::ffff:127.0.0.1", false),
            ("https", "api.example.com", None, "169.254.169.254", false),
            ("https", "api.example.com", None, "fd00:ec2::254", false),
            ("https", "api.example.com", None, "10.0.0.1", false),
            ("http", "internal.example.com", None, "192.168.1.10", false),
            // An address listed as an IP literal, with the same scheme and port.
            ("http", "127.0.0.1", Some(9000), "127.0.0.1", true),
            (
                "http",
                "[::ffff:127.0.0.1]",
                Some(9000),
                "::ffff:127.0.0.1",
                true,
            ),
            ("http", "169.254.169.254", None, "169.254.169.254", true),
            ("http", "fd00::1", Some(8080), "fd00::1", true),
            // A name whose address is listed as a literal for the same scheme and port: the
            // guest could reach that address directly anyway.
            ("http", "localhost", Some(9000), "127.0.0.1", true),
            ("http", "localhost", Some(9000), "::ffff:127.0.0.1", true),
            ("http", "localhost", Some(9000), "::1", false),
            (
                "http",
                "internal.example.com",
                None,
                "169.254.169.254",
                true,
            ),
            // Another port of a listed address is not listed.
            ("https", "api.example.com", None, "169.254.169.254", false),
        ];
        for &(scheme, host, port, addr, admitted) in cases {
            let destination = allow.check_url(scheme, host, port).unwrap();
            let result = allow.check_address(&destination, addr.parse().unwrap());
            assert_eq!(
                result.is_ok(),
                admitted,
                "{scheme}://{host} {addr}: {result:?}"
            );
        }
    }

    #[test]
    fn address_refusals() {
        let allow = list(&["http://localhost:9000", "https://api.example.com"]);
        let cases = [
            (
                ("http", "localhost", Some(9000), "127.0.0.1"),
                "http://localhost:9000/ is refused: localhost resolves to 127.0.0.1, a loopback \
                 address; list http://127.0.0.1:9000 in [outbound] allow to reach it",
            ),
            (
                ("http", "localhost", Some(9000), "::1"),
                "http://localhost:9000/ is refused: localhost resolves to ::1, a loopback \
                 address; list http://[::1]:9000 in [outbound] allow to reach it",
            ),
            (
                ("https", "api.example.com", None, "::ffff:169.254.169.254"),
                "https://api.example.com/ is refused: api.example.com resolves to \
                 ::ffff:169.254.169.254, the cloud metadata address; list \
                 https://169.254.169.254 in [outbound] allow to reach it",
            ),
        ];
        for ((scheme, host, port, addr), message) in cases {
            let destination = allow.check_url(scheme, host, port).unwrap();
            let refused = allow
                .check_address(&destination, addr.parse().unwrap())
                .unwrap_err();
            assert_eq!(refused.to_string(), message);
        }
    }

    #[test]
    fn serde_as_strings() {
        let allow = list(&["https://api.example.com", "http://[::1]:8080"]);
        let json = serde_json::to_string(&allow).unwrap();
        assert_eq!(json, r#"["https://api.example.com","http://[::1]:8080"]"#);
        assert_eq!(serde_json::from_str::<AllowList>(&json).unwrap(), allow);
        let error = serde_json::from_str::<AllowList>(r#"["ftp://x"]"#).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("the scheme must be http or https")
        );
    }
}
