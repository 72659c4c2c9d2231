//! Every TCP socket in our network namespace, in every state, with how long ago data last
//! moved on it: what `diagnose` needs to say who talks to whom and who waits on whom.
//!
//! Read through NETLINK_SOCK_DIAG with the `INET_DIAG_INFO` extension (the kernel's
//! `tcp_info`: `tcpi_last_data_sent`, `tcpi_last_data_recv`), falling back to
//! `/proc/net/tcp{,6}` (no idle times there). [`super::sock_diag`] dumps listeners only and
//! keeps its socket private; this is the same protocol, asked for everything.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use rustix::net::{AddressFamily, RecvFlags};

use super::ne_bytes::{i32_at, u16_at, u32_at};

/// One TCP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The kernel's TCP state (`tcp_states.h`): 1 established, 8 close-wait, 10 listen, ...
    pub state: u8,
    pub inode: u64,
    /// Bytes received and not read yet / sent and not acknowledged (or, for a listener,
    /// connections waiting to be accepted / the backlog).
    pub recv_queue: u32,
    pub send_queue: u32,
    /// Milliseconds since data was last sent / received (from `tcp_info`; `None` from
    /// `/proc/net`).
    pub last_data_sent_ms: Option<u32>,
    pub last_data_recv_ms: Option<u32>,
}

#[cfg(test)]
pub const TCP_ESTABLISHED: u8 = 1;
#[cfg(test)]
pub const TCP_CLOSE_WAIT: u8 = 8;
pub const TCP_LISTEN: u8 = 10;

/// A TCP state's name as `ss` prints it.
pub fn state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTAB",
        2 => "SYN-SENT",
        3 => "SYN-RECV",
        4 => "FIN-WAIT-1",
        5 => "FIN-WAIT-2",
        6 => "TIME-WAIT",
        7 => "CLOSE",
        8 => "CLOSE-WAIT",
        9 => "LAST-ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// Every TCP socket: through sock_diag, else `/proc/net/tcp{,6}` under `proc_root`.
pub fn tcp_sockets(proc_root: &Path) -> io::Result<Vec<TcpSocket>> {
    if proc_root == Path::new("/proc") {
        match diag_dump() {
            Ok(s) => return Ok(s),
            Err(e) => tracing::debug!("sock_diag (all TCP states): {e}; reading /proc/net"),
        }
    }
    let mut out = Vec::new();
    for (file, v6) in [("net/tcp", false), ("net/tcp6", true)] {
        match std::fs::read(proc_root.join(file)) {
            Ok(buf) => out.extend(parse_proc_net_tcp(&buf, v6)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && v6 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_INFO: u16 = 2;
const INET_DIAG_MSG_LEN: usize = 72;
// In `struct tcp_info`: tcpi_last_data_sent at 44, tcpi_last_data_recv at 52.
const TCPI_LAST_DATA_SENT: usize = 44;
const TCPI_LAST_DATA_RECV: usize = 52;

/// Every TCP socket with its `tcp_info`, by one `sock_diag` dump per address family,
/// framed by [`super::netlink`].
fn diag_dump() -> io::Result<Vec<TcpSocket>> {
    use super::netlink::{self, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_REQUEST};
    let fd = netlink::socket(rustix::net::netlink::SOCK_DIAG, false)?;
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_secs(2)),
    )?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    for (seq, family) in [(1u32, AddressFamily::INET), (2, AddressFamily::INET6)] {
        let mut body = [0u8; 56];
        body[0] = family.as_raw() as u8;
        body[1] = libc::IPPROTO_TCP as u8;
        body[2] = 1 << (INET_DIAG_INFO - 1); // idiag_ext: tcp_info
        body[4..8].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
        let req = netlink::message(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, &body);
        netlink::send(&fd, &req)?;
        'recv: loop {
            let (_, len) = rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty())?;
            let datagram = &buf[..len.min(buf.len())];
            if datagram.is_empty() {
                return Err(io::Error::other("empty sock_diag reply"));
            }
            for msg in netlink::messages(datagram) {
                let msg = msg?;
                if msg.seq != seq {
                    continue;
                }
                match msg.kind {
                    NLMSG_DONE => break 'recv,
                    NLMSG_ERROR => {
                        let errno = i32_at(msg.payload, 0).unwrap_or(-libc::EIO);
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    SOCK_DIAG_BY_FAMILY => out.extend(parse_diag_msg(msg.payload)),
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

/// One `inet_diag_msg` with its attributes.
pub fn parse_diag_msg(msg: &[u8]) -> Option<TcpSocket> {
    if msg.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    let family = msg[0];
    let port = |off: usize| u16::from_be_bytes([msg[off], msg[off + 1]]);
    let addr = |off: usize| -> Option<IpAddr> {
        if family == libc::AF_INET as u8 {
            let a: [u8; 4] = msg.get(off..off + 4)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(a)))
        } else {
            let a: [u8; 16] = msg.get(off..off + 16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
    };
    let mut s = TcpSocket {
        local: SocketAddr::new(addr(8)?, port(4)),
        remote: SocketAddr::new(addr(24)?, port(6)),
        state: msg[1],
        inode: u64::from(u32_at(msg, 68)?),
        recv_queue: u32_at(msg, 56)?,
        send_queue: u32_at(msg, 60)?,
        last_data_sent_ms: None,
        last_data_recv_ms: None,
    };
    let mut attrs = &msg[INET_DIAG_MSG_LEN..];
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0)?);
        let kind = u16_at(attrs, 2)? & 0x3fff;
        if len < 4 || len > attrs.len() {
            break;
        }
        if kind == INET_DIAG_INFO {
            let info = &attrs[4..len];
            s.last_data_sent_ms = u32_at(info, TCPI_LAST_DATA_SENT);
            s.last_data_recv_ms = u32_at(info, TCPI_LAST_DATA_RECV);
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    Some(s)
}

/// `/proc/net/tcp` or `tcp6`, every state.
pub fn parse_proc_net_tcp(buf: &[u8], v6: bool) -> Vec<TcpSocket> {
    let text = String::from_utf8_lossy(buf);
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let (tx, rx) = f[4].split_once(':')?;
            Some(TcpSocket {
                local: hex_addr(f[1], v6)?,
                remote: hex_addr(f[2], v6)?,
                state: u8::from_str_radix(f[3], 16).ok()?,
                inode: f[9].parse().ok()?,
                send_queue: u32::from_str_radix(tx, 16).ok()?,
                recv_queue: u32::from_str_radix(rx, 16).ok()?,
                last_data_sent_ms: None,
                last_data_recv_ms: None,
            })
        })
        .collect()
}

/// `0100007F:1068` as 127.0.0.1:4200: each 32-bit word printed in host byte order.
fn hex_addr(text: &str, v6: bool) -> Option<SocketAddr> {
    let (a, p) = text.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::to_ne_bytes);
    let ip = if v6 {
        if a.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for i in 0..4 {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&word(&a[i * 8..i * 8 + 8])?);
        }
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        if a.len() != 8 {
            return None;
        }
        IpAddr::V4(Ipv4Addr::from(word(a)?))
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    #[test]
    fn proc_net_lines() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1068 0100007F:9C40 08 00000000:00000005 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 0 10 -1\n";
        let s = parse_proc_net_tcp(text.as_bytes(), false);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].local, "127.0.0.1:4200".parse().unwrap());
        assert_eq!(s[0].remote, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(s[0].state, TCP_CLOSE_WAIT);
        assert_eq!(s[0].recv_queue, 5);
        assert_eq!(s[0].inode, 4242);
    }

    #[test]
    fn a_live_connection_with_idle_times() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        c.write_all(b"GET").unwrap();
        let ino = rustix::fs::fstat(c.as_fd()).unwrap().st_ino;
        let all = tcp_sockets(Path::new("/proc")).unwrap();
        let mine = all.iter().find(|s| s.inode == ino).expect("our socket");
        assert_eq!(mine.state, TCP_ESTABLISHED);
        assert_eq!(mine.remote, l.local_addr().unwrap());
        assert!(mine.last_data_sent_ms.is_some(), "{mine:?}");
        let lino = rustix::fs::fstat(l.as_fd()).unwrap().st_ino;
        assert!(all.iter().any(|s| s.inode == lino && s.state == TCP_LISTEN));
        // The /proc/net reading agrees on the same socket.
        let text = parse_proc_net_tcp(&std::fs::read("/proc/net/tcp").unwrap(), false);
        let same = text.iter().find(|s| s.inode == ino).unwrap();
        assert_eq!((same.local, same.remote), (mine.local, mine.remote));
        drop((server, c));
    }
}
