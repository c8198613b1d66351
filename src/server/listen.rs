//! Listening sockets: bind with the options cgihost needs (`SO_REUSEADDR`,
//! `IPV6_V6ONLY` for an IPv6 listener that shares its port with an IPv4
//! one, as nginx's `listen [::]:80`), and the backlog.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

use crate::config::Listen;

/// A bound socket; `tls`: HTTPS only (with the live certificate);
/// `proxy_protocol`: every connection starts with a PROXY header.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: bool,
    pub proxy_protocol: bool,
}

/// Connections the kernel queues for a listener before cgihost accepts
/// them (tokio's and mio's default).
const LISTEN_BACKLOG: u32 = 1024;

impl Listener {
    /// Bind and listen on `listen`, one of the configured `all`.
    ///
    /// An IPv6 listener that shares its port with an IPv4 one takes IPv6
    /// only (`IPV6_V6ONLY`), as nginx's `listen [::]:80` does, so that
    /// `0.0.0.0:80` and `[::]:80` can both be configured. Alone, `[::]`
    /// keeps the system's default (on Linux it takes IPv4 too).
    pub fn bind(listen: &Listen, all: &[Listen]) -> io::Result<Listener> {
        let socket = unbound_socket(listen.addr, all)?;
        socket.bind(listen.addr)?;
        Ok(Listener {
            tcp: socket.listen(LISTEN_BACKLOG)?,
            tls: listen.tls,
            proxy_protocol: listen.proxy_protocol,
        })
    }
}

/// A socket for `addr` with its options set, not yet bound.
fn unbound_socket(addr: SocketAddr, all: &[Listen]) -> io::Result<TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    // A v4-mapped address (`[::ffff:a.b.c.d]`) is IPv4 inside: the kernel
    // refuses to bind it IPv6-only.
    let v6_only = match addr {
        SocketAddr::V6(v6) => {
            v6.ip().to_ipv4_mapped().is_none()
                && all
                    .iter()
                    .any(|l| l.addr.is_ipv4() && l.addr.port() == addr.port())
        }
        SocketAddr::V4(_) => false,
    };
    if v6_only {
        set_v6_only(&socket)?;
    }
    Ok(socket)
}

fn set_v6_only(socket: &TcpSocket) -> io::Result<()> {
    socket2::SockRef::from(socket).set_only_v6(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6_only(socket: &TcpSocket) -> libc::c_int {
        socket2::SockRef::from(socket)
            .only_v6()
            .map_or(-1, libc::c_int::from)
    }

    fn listen(addr: &str, tls: bool) -> Listen {
        Listen {
            addr: addr.parse().unwrap(),
            tls,
            proxy_protocol: false,
        }
    }

    #[test]
    fn ipv6_beside_ipv4_on_the_same_port_takes_ipv6_only() {
        // Read before bind: binding a specific IPv6 address sets the
        // option in any case. The default is net.ipv6.bindv6only.
        let default = std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").unwrap();
        let nginx_style = [listen("0.0.0.0:80", false), listen("[::]:80", false)];
        let table = [
            (&nginx_style[..], "1"),
            (&nginx_style[1..], default.trim()),
            (
                &[listen("0.0.0.0:81", false), listen("[::]:80", false)][..],
                default.trim(),
            ),
            (
                &[
                    listen("0.0.0.0:80", false),
                    listen("[::ffff:127.0.0.2]:80", false),
                ][..],
                default.trim(),
            ),
        ];
        for (all, want) in table {
            let v6 = all.last().unwrap().addr;
            let socket = unbound_socket(v6, all).unwrap();
            assert_eq!(v6_only(&socket).to_string(), want, "{v6} in {all:?}");
        }
    }

    #[tokio::test]
    async fn listeners_bind_ipv4_and_ipv6_loopback_on_one_port() {
        let v4 = Listener::bind(&listen("127.0.0.1:0", false), &[]).unwrap();
        let port = v4.tcp.local_addr().unwrap().port();
        let both = [
            listen(&format!("127.0.0.1:{port}"), false),
            listen(&format!("[::1]:{port}"), true),
        ];
        let v6 = Listener::bind(&both[1], &both).unwrap();
        assert!(v6.tls);
        assert_eq!(v6.tcp.local_addr().unwrap(), both[1].addr);
        let (client, accepted) = tokio::join!(
            tokio::net::TcpStream::connect(both[1].addr),
            v6.tcp.accept()
        );
        let (_, peer) = accepted.unwrap();
        assert_eq!(peer, client.unwrap().local_addr().unwrap());
        // A v4-mapped address on that port binds as before (IPv4 inside).
        let mapped = listen(&format!("[::ffff:127.0.0.2]:{port}"), false);
        Listener::bind(&mapped, &[both[0], mapped]).unwrap();
    }
}
