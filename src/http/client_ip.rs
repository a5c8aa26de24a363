//! Which address a request comes from, for the per-IP sign-up limit. Behind
//! a reverse proxy every request arrives from the proxy; the proxy's
//! `Forwarded` (RFC 7239) or `X-Forwarded-For` header names the client, but
//! anyone can send those headers, so they count only when the peer is one of
//! `[http] trusted_proxies`, and only up to the rightmost hop that is not a
//! trusted proxy (hops left of it were written by the client itself).

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client address: the peer, or when the peer is a trusted proxy the
/// rightmost forwarded hop that is not one. A hop that does not name an
/// address (`unknown`, an obfuscated `_name`, garbage) stops the walk: the
/// last trusted proxy is then taken as the client.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops = forwarded_hops(headers);
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) => {
                client = *ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack
/// listener reports) compare as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The forwarded hops, left (client side) to right (nearest proxy). Uses
/// `Forwarded` when present, else `X-Forwarded-For`; every header line counts,
/// in order.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<_> = headers.get_all("forwarded").iter().collect();
    if !forwarded.is_empty() {
        let mut hops = Vec::new();
        for value in forwarded {
            let Ok(text) = value.to_str() else {
                hops.push(None);
                continue;
            };
            for element in text.split(',') {
                let node = element.split(';').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
                });
                // An element without for= says nothing about the client.
                if let Some(node) = node {
                    hops.push(parse_node(node));
                }
            }
        }
        return hops;
    }
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            hops.push(None);
            continue;
        };
        hops.extend(text.split(',').map(|h| parse_node(h.trim())));
    }
    hops
}

/// An RFC 7239 node (`192.0.2.60`, `"[2001:db8::1]:4711"`, `192.0.2.60:80`)
/// or a plain X-Forwarded-For entry; None for `unknown` and obfuscated names.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = node.strip_prefix('[') {
        let inside = rest.split(']').next()?;
        return inside.parse::<IpAddr>().ok().map(canonical);
    }
    node.parse::<SocketAddr>().ok().map(|a| canonical(a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn headers_from_untrusted_peers_are_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
        ]);
        assert_eq!(
            client_ip(ip("198.51.100.1"), &h, &nets(&["10.0.0.0/8"])),
            ip("198.51.100.1")
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &[]), ip("10.0.0.1"));
    }

    #[test]
    fn rightmost_untrusted_hop_of_x_forwarded_for() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client prepended a fake hop; the proxy appended the real one.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.5")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.9"));
        // Several header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.7"));
        // Only trusted hops: the leftmost of them.
        let h = headers(&[("x-forwarded-for", "10.1.1.1, 10.0.0.5")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.1.1.1"));
        // No header: the proxy itself.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn forwarded_header_forms_of_rfc_7239() {
        let trusted = nets(&["10.0.0.0/8", "::1/128"]);
        let h = headers(&[(
            "forwarded",
            "for=1.1.1.1, for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.0.0.3;by=10.0.0.1",
        )]);
        assert_eq!(client_ip(ip("::1"), &h, &trusted), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "for=192.0.2.60:8080;proto=http")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("192.0.2.60"));
        // Forwarded wins over X-Forwarded-For.
        let h = headers(&[
            ("forwarded", "For=192.0.2.61"),
            ("x-forwarded-for", "192.0.2.99"),
        ]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("192.0.2.61"));
        // An obfuscated hop stops the walk at the last trusted proxy.
        let h = headers(&[("forwarded", "for=192.0.2.1, for=_hidden, for=10.0.0.9")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.9"));
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_networks() {
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &h, &nets(&["10.0.0.0/8"])),
            ip("203.0.113.9")
        );
    }
}
