//! Where a webhook may be sent: the address classifier and the resolve-then-check step.
//!
//! A webhook URL is chosen by a user, so the notifier must never be the one that reaches
//! the inside (metadata services, databases, the mesh itself) for them. The check is made
//! on the *addresses* a host name resolves to, every one of them, and the connection then
//! goes to one of exactly those checked addresses: the name is never resolved a second
//! time, which closes DNS rebinding (a name that answers a public address to the check and
//! a private one to the connect).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use ipnet::IpNet;

use super::target::Target;

/// Longest a webhook host's name resolution may take; a slow resolver fails the
/// registration (or delays the delivery's retry) rather than holding a handler.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Addresses of one host tried for a delivery; all of them are checked, at most this many used.
pub const MAX_ADDRESSES: usize = 16;

/// Why an address may not receive webhooks: the special-purpose range it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    Unspecified,
    ThisNetwork,
    Loopback,
    Private,
    SharedCgnat,
    LinkLocal,
    ProtocolAssignments,
    Documentation,
    Benchmarking,
    Multicast,
    Broadcast,
    Reserved,
    UniqueLocal,
    SiteLocal,
    Discard,
    Nat64Local,
    Teredo,
    /// IPv6 outside global unicast (2000::/3) and not one of the forms above.
    NotGlobalUnicast,
}

impl Forbidden {
    /// A short name for messages, e.g. `loopback`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::ThisNetwork => "this-network (0.0.0.0/8)",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::SharedCgnat => "shared/CGNAT (100.64.0.0/10)",
            Self::LinkLocal => "link-local",
            Self::ProtocolAssignments => "IETF protocol assignments",
            Self::Documentation => "documentation",
            Self::Benchmarking => "benchmarking",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Reserved => "reserved",
            Self::UniqueLocal => "unique local (fc00::/7)",
            Self::SiteLocal => "site-local (fec0::/10)",
            Self::Discard => "discard-only (100::/64)",
            Self::Nat64Local => "local-use NAT64 (64:ff9b:1::/48)",
            Self::Teredo => "Teredo (2001::/32)",
            Self::NotGlobalUnicast => "not global unicast",
        }
    }
}

/// Classifies an address: `Ok` for an ordinary public address, otherwise the special range it
/// is in. IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64 well-known prefix,
/// 6to4) are judged by the IPv4 address they carry.
pub fn classify(ip: IpAddr) -> Result<(), Forbidden> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Result<(), Forbidden> {
    use Forbidden::*;
    // Ordered so that the more specific range wins (0.0.0.0 before 0/8, broadcast before 240/4).
    let ranges: [([u8; 4], u32, Forbidden); 17] = [
        ([0, 0, 0, 0], 32, Unspecified),
        ([255, 255, 255, 255], 32, Broadcast),
        ([0, 0, 0, 0], 8, ThisNetwork),
        ([10, 0, 0, 0], 8, Private),
        ([100, 64, 0, 0], 10, SharedCgnat),
        ([127, 0, 0, 0], 8, Loopback),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([172, 16, 0, 0], 12, Private),
        ([192, 0, 0, 0], 24, ProtocolAssignments),
        ([192, 0, 2, 0], 24, Documentation),
        ([192, 88, 99, 0], 24, Reserved),
        ([192, 168, 0, 0], 16, Private),
        ([198, 18, 0, 0], 15, Benchmarking),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([224, 0, 0, 0], 4, Multicast),
        ([240, 0, 0, 0], 4, Reserved),
    ];
    match ranges.iter().find(|(net, prefix, _)| in_v4(ip, *net, *prefix)) {
        Some((_, _, class)) => Err(*class),
        None => Ok(()),
    }
}

fn in_v6(ip: Ipv6Addr, net: u128, prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
    u128::from(ip) & mask == net & mask
}

/// The IPv4 address in the low 32 bits.
fn low_v4(ip: Ipv6Addr) -> Ipv4Addr {
    Ipv4Addr::from((u128::from(ip) & 0xffff_ffff) as u32)
}

fn classify_v6(ip: Ipv6Addr) -> Result<(), Forbidden> {
    use Forbidden::*;
    let bits = u128::from(ip);
    if ip.is_unspecified() {
        return Err(Unspecified);
    }
    if ip.is_loopback() {
        return Err(Loopback);
    }
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated): the IPv4 address decides.
    if in_v6(ip, 0xffff_0000_0000, 96) || in_v6(ip, 0, 96) {
        return classify_v4(low_v4(ip));
    }
    // 64:ff9b::/96, the NAT64 well-known prefix: a NAT64 gateway would connect to the IPv4 inside.
    if in_v6(ip, 0x0064_ff9b << 96, 96) {
        return classify_v4(low_v4(ip));
    }
    // 2002::/16, 6to4: the relay would forward to the IPv4 address in bits 16-48.
    if in_v6(ip, 0x2002 << 112, 16) {
        return classify_v4(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    let ranges: [(u128, u32, Forbidden); 11] = [
        (0x0064_ff9b_0001 << 80, 48, Nat64Local),
        (0x0100 << 112, 64, Discard),
        (0x2001_0000 << 96, 32, Teredo),
        (0x2001_0002 << 96, 48, Benchmarking),
        (0x2001_0db8 << 96, 32, Documentation),
        (0x2001 << 112, 23, ProtocolAssignments),
        (0x3fff << 112, 20, Documentation),
        (0xfc00 << 112, 7, UniqueLocal),
        (0xfe80 << 112, 10, LinkLocal),
        (0xfec0 << 112, 10, SiteLocal),
        (0xff00 << 112, 8, Multicast),
    ];
    if let Some((_, _, class)) = ranges.iter().find(|(net, prefix, _)| in_v6(ip, *net, *prefix)) {
        return Err(*class);
    }
    if !in_v6(ip, 0x2000 << 112, 3) {
        return Err(NotGlobalUnicast);
    }
    Ok(())
}

/// What the operator allows: plain http or not, the ports, and networks exempt from the
/// classifier (the local stack's demo receiver on 127.0.0.1).
#[derive(Debug, Clone)]
pub struct AddressPolicy {
    pub allow_http: bool,
    pub allowed_ports: Vec<std::ops::RangeInclusive<u16>>,
    pub allowed_networks: Vec<IpNet>,
}

/// Why a webhook target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("http:// webhooks are not allowed here (WEBHOOK_ALLOW_HTTP); use https://")]
    HttpNotAllowed,
    #[error("port {0} is not in WEBHOOK_ALLOWED_PORTS")]
    PortNotAllowed(u16),
    #[error("host {host:?} resolves to {address}, a {} address", class.name())]
    AddressForbidden { host: String, address: IpAddr, class: Forbidden },
    #[error("host {host:?} does not resolve: {problem}")]
    Unresolved { host: String, problem: String },
}

impl AddressPolicy {
    /// Checks the parts of `target` that need no resolution: scheme and port.
    pub fn check_target(&self, target: &Target) -> Result<(), Refusal> {
        if !target.https && !self.allow_http {
            return Err(Refusal::HttpNotAllowed);
        }
        if !self.allowed_ports.iter().any(|ports| ports.contains(&target.port)) {
            return Err(Refusal::PortNotAllowed(target.port));
        }
        Ok(())
    }

    /// Checks one address: allowed when in an allow-listed network, else when ordinary public.
    /// IPv4-mapped IPv6 is compared as the IPv4 address it maps.
    pub fn check_address(&self, host: &str, address: IpAddr) -> Result<(), Refusal> {
        let canonical = address.to_canonical();
        if self.allowed_networks.iter().any(|net| net.contains(&canonical)) {
            return Ok(());
        }
        classify(canonical).map_err(|class| Refusal::AddressForbidden {
            host: host.to_owned(),
            address: canonical,
            class,
        })
    }

    /// Resolves `target`'s host (a literal address is not looked up), checks scheme, port
    /// and *every* address, and returns the checked socket addresses to connect to. Nothing
    /// else may be connected to: the caller never resolves the name again.
    pub async fn resolve(&self, target: &Target) -> Result<Vec<SocketAddr>, Refusal> {
        self.check_target(target)?;
        let unresolved = |problem: String| Refusal::Unresolved { host: target.host.clone(), problem };
        let addresses: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, target.port)],
            Err(_) => tokio::time::timeout(
                RESOLVE_TIMEOUT,
                tokio::net::lookup_host((target.host.as_str(), target.port)),
            )
            .await
            .map_err(|_| unresolved(format!("no answer within {RESOLVE_TIMEOUT:?}")))?
            .map_err(|e| unresolved(e.to_string()))?
            .collect(),
        };
        if addresses.is_empty() {
            return Err(unresolved("no addresses".into()));
        }
        for address in &addresses {
            self.check_address(&target.host, address.ip())?;
        }
        let mut addresses: Vec<SocketAddr> =
            addresses.into_iter().map(|a| SocketAddr::new(a.ip().to_canonical(), a.port())).collect();
        addresses.dedup();
        addresses.truncate(MAX_ADDRESSES);
        Ok(addresses)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{Forbidden::*, *};

    /// Every special range, with its edges and the first address outside it.
    #[test]
    fn classifier_table() {
        let table: &[(&str, Result<(), Forbidden>)] = &[
            // IPv4
            ("0.0.0.0", Err(Unspecified)),
            ("0.1.2.3", Err(ThisNetwork)),
            ("0.255.255.255", Err(ThisNetwork)),
            ("1.0.0.0", Ok(())),
            ("8.8.8.8", Ok(())),
            ("9.255.255.255", Ok(())),
            ("10.0.0.0", Err(Private)),
            ("10.255.255.255", Err(Private)),
            ("11.0.0.0", Ok(())),
            ("100.63.255.255", Ok(())),
            ("100.64.0.0", Err(SharedCgnat)),
            ("100.127.255.255", Err(SharedCgnat)),
            ("100.128.0.0", Ok(())),
            ("126.255.255.255", Ok(())),
            ("127.0.0.1", Err(Loopback)),
            ("127.255.255.254", Err(Loopback)),
            ("128.0.0.0", Ok(())),
            ("169.253.255.255", Ok(())),
            ("169.254.0.0", Err(LinkLocal)),
            ("169.254.169.254", Err(LinkLocal)),
            ("169.254.255.255", Err(LinkLocal)),
            ("169.255.0.0", Ok(())),
            ("172.15.255.255", Ok(())),
            ("172.16.0.0", Err(Private)),
            ("172.31.255.255", Err(Private)),
            ("172.32.0.0", Ok(())),
            ("192.0.0.0", Err(ProtocolAssignments)),
            ("192.0.0.255", Err(ProtocolAssignments)),
            ("192.0.1.0", Ok(())),
            ("192.0.2.0", Err(Documentation)),
            ("192.0.2.255", Err(Documentation)),
            ("192.0.3.0", Ok(())),
            ("192.88.99.1", Err(Reserved)),
            ("192.167.255.255", Ok(())),
            ("192.168.0.0", Err(Private)),
            ("192.168.255.255", Err(Private)),
            ("192.169.0.0", Ok(())),
            ("198.17.255.255", Ok(())),
            ("198.18.0.0", Err(Benchmarking)),
            ("198.19.255.255", Err(Benchmarking)),
            ("198.20.0.0", Ok(())),
            ("198.51.100.7", Err(Documentation)),
            ("203.0.113.255", Err(Documentation)),
            ("203.0.114.0", Ok(())),
            ("223.255.255.255", Ok(())),
            ("224.0.0.0", Err(Multicast)),
            ("239.255.255.255", Err(Multicast)),
            ("240.0.0.0", Err(Reserved)),
            ("255.255.255.254", Err(Reserved)),
            ("255.255.255.255", Err(Broadcast)),
            // IPv6
            ("::", Err(Unspecified)),
            ("::1", Err(Loopback)),
            ("::2", Err(ThisNetwork)), // IPv4-compatible ::0.0.0.2
            ("::ffff:127.0.0.1", Err(Loopback)),
            ("::ffff:10.1.2.3", Err(Private)),
            ("::ffff:169.254.169.254", Err(LinkLocal)),
            ("::ffff:0.0.0.0", Err(Unspecified)),
            ("::ffff:8.8.8.8", Ok(())),
            ("::127.0.0.1", Err(Loopback)),
            ("::192.168.1.1", Err(Private)),
            ("::8.8.8.8", Ok(())),
            ("64:ff9b::10.0.0.1", Err(Private)),
            ("64:ff9b::127.0.0.1", Err(Loopback)),
            ("64:ff9b::8.8.8.8", Ok(())),
            ("64:ff9b:1::1", Err(Nat64Local)),
            ("100::1", Err(Discard)),
            ("2001::1", Err(Teredo)),
            ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", Err(Teredo)),
            ("2001:1::1", Err(ProtocolAssignments)),
            ("2001:2::1", Err(Benchmarking)),
            ("2001:1ff:ffff::1", Err(ProtocolAssignments)),
            ("2001:200::1", Ok(())),
            ("2001:db8::1", Err(Documentation)),
            ("2001:db8:ffff::1", Err(Documentation)),
            ("2001:db9::1", Ok(())),
            ("2002:7f00:1::1", Err(Loopback)),
            ("2002:a00:1::1", Err(Private)),
            ("2002:808:808::1", Ok(())),
            ("2606:4700::1111", Ok(())),
            ("2a00:1450:4001::1", Ok(())),
            ("3ffe:ffff::1", Ok(())),
            ("3fff::1", Err(Documentation)),
            ("3fff:fff::1", Err(Documentation)),
            ("4000::1", Err(NotGlobalUnicast)),
            ("1::1", Err(NotGlobalUnicast)),
            ("fc00::1", Err(UniqueLocal)),
            ("fdff:ffff::1", Err(UniqueLocal)),
            ("fe80::1", Err(LinkLocal)),
            ("febf::1", Err(LinkLocal)),
            ("fec0::1", Err(SiteLocal)),
            ("ff02::1", Err(Multicast)),
            ("ff0e::1", Err(Multicast)),
        ];
        for (address, expected) in table {
            let ip: IpAddr = address.parse().unwrap();
            assert_eq!(classify(ip), *expected, "{address}");
        }
    }

    fn policy(allow_http: bool, networks: &[&str]) -> AddressPolicy {
        AddressPolicy {
            allow_http,
            allowed_ports: vec![443..=443, 8000..=8999],
            allowed_networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
        }
    }

    fn target(url: &str) -> Target {
        Target::parse(url).unwrap()
    }

    #[test]
    fn allow_listed_networks_exempt_only_themselves() {
        let p = policy(true, &["127.0.0.1/32", "fd00:1::/64"]);
        assert_eq!(p.check_address("h", "127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(p.check_address("h", "::ffff:127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(p.check_address("h", "fd00:1::5".parse().unwrap()), Ok(()));
        for refused in ["127.0.0.2", "::1", "fd00:2::5", "10.0.0.1"] {
            assert!(
                matches!(
                    p.check_address("h", refused.parse().unwrap()),
                    Err(Refusal::AddressForbidden { .. })
                ),
                "{refused}"
            );
        }
    }

    #[test]
    fn scheme_and_port_are_checked_before_any_resolution() {
        let p = policy(false, &[]);
        assert_eq!(p.check_target(&target("http://hooks.test/")), Err(Refusal::HttpNotAllowed));
        assert_eq!(p.check_target(&target("https://hooks.test:22/")), Err(Refusal::PortNotAllowed(22)));
        assert_eq!(p.check_target(&target("https://hooks.test:8080/")), Ok(()));
        assert_eq!(p.check_target(&target("https://hooks.test/")), Ok(()));
        assert_eq!(policy(true, &[]).check_target(&target("http://hooks.test:8443/")), Ok(()));
    }

    #[tokio::test]
    async fn every_resolved_address_is_checked() {
        let p = policy(true, &[]);
        // A literal private address is refused without any lookup.
        let refused = p.resolve(&target("http://192.168.1.10:8080/")).await.unwrap_err();
        assert!(matches!(refused, Refusal::AddressForbidden { class: Private, .. }), "{refused:?}");
        let refused = p.resolve(&target("http://[::ffff:10.0.0.1]:8080/")).await.unwrap_err();
        assert!(matches!(refused, Refusal::AddressForbidden { class: Private, .. }), "{refused:?}");
        // A real name that resolves to loopback.
        let refused = p.resolve(&target("http://localhost:8080/")).await.unwrap_err();
        assert!(matches!(refused, Refusal::AddressForbidden { class: Loopback, .. }), "{refused:?}");
        // Allow-listed, the same name resolves to exactly the checked addresses.
        let p = policy(true, &["127.0.0.0/8", "::1/128"]);
        let addresses = p.resolve(&target("http://localhost:8080/")).await.unwrap();
        assert!(!addresses.is_empty());
        assert!(addresses.iter().all(|a| a.ip().is_loopback() && a.port() == 8080), "{addresses:?}");
    }
}
