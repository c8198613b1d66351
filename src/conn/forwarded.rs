//! Behind a load balancer: a request whose client (the TCP peer, or the
//! source a PROXY protocol header named) is a trusted proxy
//! (`trusted_proxies`) names the real client in `X-Forwarded-For` and its
//! scheme in `X-Forwarded-Proto`. From anyone else these headers change
//! nothing: they are the client's own words.
//!
//! `X-Forwarded-For` is read from the right, as each proxy appends the
//! address it was connected from: the client is the right-most hop that is
//! not itself a trusted proxy (when every hop is one, the left-most). A
//! hop that is not an address (`unknown`, a name, garbage) ends the walk:
//! nothing left of it can be vouched for, and the hop to its right (or the
//! peer) is the client. A hop may carry a port (`1.2.3.4:5678`,
//! `[2001:db8::1]:443`); most carry none, and the client's port is then
//! unknown (`REMOTE_PORT` unset) rather than the proxy's.
//!
//! `X-Forwarded-Proto`: the right-most value (the one the nearest proxy
//! set), `https` or `http` in any case; any other value is ignored.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

use super::{Client, ConnInfo};

/// The `trusted_proxies` networks.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(nets: &[IpNet]) -> TrustedProxies {
        TrustedProxies {
            nets: nets.to_vec(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// `ip` (an IPv4-mapped IPv6 address as its IPv4 self) is a proxy's.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// `conn` as a request with `headers` on it sees it: from a trusted
    /// proxy, with the client and scheme its headers name; else as it is.
    pub fn apply<'a>(&self, conn: &'a ConnInfo, headers: &HeaderMap) -> Cow<'a, ConnInfo> {
        if self.nets.is_empty() || !self.contains(conn.client.ip) {
            return Cow::Borrowed(conn);
        }
        let client = self.forwarded_client(headers);
        let https = forwarded_https(headers);
        if client.is_none() && https.is_none() {
            return Cow::Borrowed(conn);
        }
        let mut seen = conn.clone();
        if let Some(client) = client {
            seen.client = client;
        }
        if let Some(https) = https {
            seen.https = https;
        }
        Cow::Owned(seen)
    }

    /// The right-most `X-Forwarded-For` hop that is not a trusted proxy
    /// (see the module doc); None: no usable hop, the peer stays.
    fn forwarded_client(&self, headers: &HeaderMap) -> Option<Client> {
        let mut found = None;
        // Several header lines are one list, in order (RFC 9110 §5.3).
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(text) = value.to_str() else {
                return found;
            };
            for hop in text.rsplit(',').map(str::trim) {
                // Empty list elements are no element (RFC 9110 §5.6.1).
                if hop.is_empty() {
                    continue;
                }
                let Some(client) = parse_hop(hop) else {
                    return found;
                };
                found = Some(client);
                if !self.contains(client.ip) {
                    return found;
                }
            }
        }
        found
    }
}

/// One `X-Forwarded-For` hop: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`,
/// or either with a port (`1.2.3.4:80`, `[2001:db8::1]:80`).
pub fn parse_hop(hop: &str) -> Option<Client> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(Client {
            ip: ip.to_canonical(),
            port: None,
        });
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(Client::from(addr));
    }
    let bracketed = hop.strip_prefix('[')?.strip_suffix(']')?;
    let ip = bracketed.parse::<std::net::Ipv6Addr>().ok()?;
    Some(Client {
        ip: IpAddr::V6(ip).to_canonical(),
        port: None,
    })
}

/// The scheme the right-most `X-Forwarded-Proto` value names, if it is
/// `https` or `http`.
fn forwarded_https(headers: &HeaderMap) -> Option<bool> {
    let last = headers.get_all("x-forwarded-proto").iter().next_back()?;
    let value = last.to_str().ok()?.rsplit(',').next()?.trim();
    if value.eq_ignore_ascii_case("https") {
        Some(true)
    } else if value.eq_ignore_ascii_case("http") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
        TrustedProxies::new(&nets)
    }

    fn conn(peer: &str, tls: bool) -> ConnInfo {
        ConnInfo::direct(peer.parse().unwrap(), "10.9.9.9:80".parse().unwrap(), tls)
    }

    fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in lines {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    /// The client (as text) a request from `peer` with `xff` lines gets.
    fn client_of(proxies: &TrustedProxies, peer: &str, xff: &[&'static str]) -> String {
        let lines: Vec<_> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
        let c = conn(peer, false);
        proxies.apply(&c, &headers(&lines)).client.to_string()
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let p = trusted(&["10.0.0.0/8", "127.0.0.1/32"]);
        let table: &[(&str, &[&str], &str)] = &[
            ("127.0.0.1:5000", &["203.0.113.7"], "203.0.113.7"),
            // A client's forged hop stays left of the one the proxy added.
            ("127.0.0.1:5000", &["1.1.1.1, 203.0.113.7"], "203.0.113.7"),
            // Trusted hops are skipped.
            (
                "10.0.0.2:5000",
                &["198.51.100.1, 203.0.113.7, 10.0.0.9"],
                "203.0.113.7",
            ),
            // Lines join into one list, in order.
            (
                "10.0.0.2:5000",
                &["198.51.100.1", "203.0.113.7, 10.1.1.1"],
                "203.0.113.7",
            ),
            // Every hop trusted: the left-most.
            ("10.0.0.2:5000", &["10.5.5.5, 10.0.0.9"], "10.5.5.5"),
            // Ports, brackets, IPv6, IPv4-mapped.
            ("10.0.0.2:5000", &["203.0.113.7:4711"], "203.0.113.7:4711"),
            ("10.0.0.2:5000", &["[2001:db8::1]:443"], "[2001:db8::1]:443"),
            ("10.0.0.2:5000", &["[2001:db8::1]"], "2001:db8::1"),
            ("10.0.0.2:5000", &["2001:db8::1"], "2001:db8::1"),
            ("10.0.0.2:5000", &["::ffff:203.0.113.7"], "203.0.113.7"),
            ("[::ffff:10.0.0.2]:5000", &["203.0.113.7"], "203.0.113.7"),
            // Empty elements are skipped.
            ("10.0.0.2:5000", &[" , 203.0.113.7 ,, "], "203.0.113.7"),
            // Garbage ends the walk at the hop right of it, or the peer.
            (
                "10.0.0.2:5000",
                &["203.0.113.7, unknown, 10.0.0.9"],
                "10.0.0.9",
            ),
            ("10.0.0.2:5000", &["203.0.113.7, bad"], "10.0.0.2:5000"),
            ("10.0.0.2:5000", &["1.2.3.4:99999"], "10.0.0.2:5000"),
            ("10.0.0.2:5000", &["1.2.3.4/8"], "10.0.0.2:5000"),
            ("10.0.0.2:5000", &[""], "10.0.0.2:5000"),
            // From an untrusted peer nothing changes.
            ("192.0.2.1:5000", &["203.0.113.7"], "192.0.2.1:5000"),
            ("[::1]:5000", &["203.0.113.7"], "[::1]:5000"),
        ];
        for (peer, xff, want) in table {
            assert_eq!(client_of(&p, peer, xff), *want, "{peer} {xff:?}");
        }
        assert_eq!(
            client_of(&TrustedProxies::default(), "10.0.0.2:1", &["203.0.113.7"]),
            "10.0.0.2:1"
        );
    }

    #[test]
    fn forwarded_proto_sets_the_scheme_from_trusted_peers_only() {
        let p = trusted(&["127.0.0.0/8"]);
        let table: &[(&str, bool, &[&'static str], bool)] = &[
            ("127.0.0.1:1", false, &["https"], true),
            ("127.0.0.1:1", false, &["HTTPS"], true),
            ("127.0.0.1:1", true, &["http"], false),
            ("127.0.0.1:1", false, &["https, http"], false),
            ("127.0.0.1:1", false, &["http", "https"], true),
            ("127.0.0.1:1", true, &["gopher"], true),
            ("127.0.0.1:1", false, &["gopher"], false),
            ("192.0.2.1:1", false, &["https"], false),
            ("192.0.2.1:1", true, &["http"], true),
        ];
        for (peer, tls, xfp, want) in table {
            let lines: Vec<_> = xfp.iter().map(|v| ("x-forwarded-proto", *v)).collect();
            let c = conn(peer, *tls);
            let seen = p.apply(&c, &headers(&lines));
            assert_eq!(seen.https, *want, "{peer} tls={tls} {xfp:?}");
            assert_eq!(seen.client, c.client);
        }
    }

    #[test]
    fn a_request_without_forwarded_headers_borrows_the_connection() {
        let p = trusted(&["0.0.0.0/0"]);
        let c = conn("127.0.0.1:1", false);
        let h = headers(&[("x-real-ip", "1.2.3.4")]);
        assert!(matches!(p.apply(&c, &h), Cow::Borrowed(_)));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn hop() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<[u8; 4]>().prop_map(|o| std::net::Ipv4Addr::from(o).to_string()),
                (any::<[u8; 4]>(), any::<u16>())
                    .prop_map(|(o, p)| format!("{}:{p}", std::net::Ipv4Addr::from(o))),
                any::<u128>().prop_map(|v| format!("[{}]", std::net::Ipv6Addr::from(v))),
                "[ -~]{0,12}",
            ]
        }

        proptest! {
            /// From an untrusted peer no header changes anything; from a
            /// trusted one the client is the peer or one of the hops.
            #[test]
            fn the_client_is_the_peer_or_a_hop(
                hops in proptest::collection::vec(hop(), 0..6),
                peer in any::<[u8; 4]>(),
            ) {
                let p = trusted(&["10.0.0.0/8"]);
                let list = hops.join(",");
                let Ok(value) = HeaderValue::from_str(&list) else { return Ok(()) };
                let mut h = HeaderMap::new();
                h.insert("x-forwarded-for", value);
                h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
                let peer = SocketAddr::from((peer, 4000));
                let c = ConnInfo::direct(peer, peer, false);
                let seen = p.apply(&c, &h);
                if !p.contains(peer.ip()) {
                    prop_assert_eq!(seen.client, c.client);
                    prop_assert!(!seen.https);
                } else {
                    prop_assert!(seen.https);
                    let from_hops = hops.iter().filter_map(|h| parse_hop(h.trim()));
                    prop_assert!(
                        seen.client == c.client || from_hops.clone().any(|h| h == seen.client),
                        "{} from {:?}", seen.client, hops
                    );
                }
            }
        }
    }
}
