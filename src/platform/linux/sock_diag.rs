//! Listening sockets through NETLINK_SOCK_DIAG: the same answer as the `/proc/net` parsers
//! in [`super::net`], without having the kernel format (and us parse) a text line for every
//! socket on the machine, established ones included.
//!
//! Five dumps on one netlink socket: TCP in LISTEN and UDP in CLOSE (bound, unconnected),
//! each for AF_INET and AF_INET6, then unix sockets in LISTEN. Requests are built and replies
//! parsed as plain bytes in native byte order (netlink's), so there is no `unsafe` here.
//!
//! What must match `/proc/net` exactly, and how:
//! - inet: the kernel fills `inet_diag_msg` from the same fields `/proc/net/tcp*` and
//!   `udp*` print (`sk_rcv_saddr`/`sk_v6_rcv_saddr`, `inet_sport`, `sock_i_ino`,
//!   `sock_i_uid`), and dumps by family the way those files list by family;
//! - unix: `/proc/net/unix` prints a name as its bytes minus the trailing NUL of a path
//!   name, with an abstract name's leading NUL (and any NUL in it) shown as `@`;
//!   [`unix_name`] renders `UNIX_DIAG_NAME`'s raw `sun_path` bytes the same way.
//!
//! One known difference: `/proc/net/unix` ends a line at a newline inside a socket path, so
//! the text parser cuts such a path short; here it comes back whole.

use super::ne_bytes::{i32_at, u16_at, u32_at};
#[cfg(test)]
use super::netlink::NLMSG_HDRLEN;
use super::netlink::{
    self, align4, messages, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_DUMP_INTR,
};
#[cfg(test)]
use rustix::net::SocketType;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::net::{AddressFamily, RecvFlags};

use crate::model::{Bytes, Listener, Protocol, SocketKind};

// <linux/sock_diag.h>
const SOCK_DIAG_BY_FAMILY: u16 = 20;
// <linux/tcp_states.h>
const TCP_LISTEN: u8 = 10;
/// What a bound, unconnected UDP socket reports (a connected one is TCP_ESTABLISHED).
const TCP_CLOSE: u8 = 7;
// <linux/inet_diag.h>: inet_diag_req_v2 is 56 bytes; in inet_diag_msg (72 bytes) the
// sockid starts at 4 (sport at 4, src at 8), uid is at 64 and inode at 68.
const INET_DIAG_REQ_V2_LEN: usize = 56;
const INET_DIAG_MSG_LEN: usize = 72;
// <linux/unix_diag.h>: unix_diag_req is 24 bytes, unix_diag_msg 16 (type at 1, state at 2,
// inode at 4), followed by attributes.
const UNIX_DIAG_REQ_LEN: usize = 24;
const UNIX_DIAG_MSG_LEN: usize = 16;
const UDIAG_SHOW_NAME: u32 = 0x01;
const UNIX_DIAG_NAME: u16 = 0;
const NLA_HDRLEN: usize = 4;
/// NLA_F_NESTED | NLA_F_NET_BYTEORDER: flags carried in an attribute's type.
const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);
// <linux/net.h>
const SOCK_STREAM: u8 = 1;
const SOCK_SEQPACKET: u8 = 5;

/// How many times one dump is started again after the kernel flags it interrupted (the
/// socket table changed under it).
const DUMP_ATTEMPTS: usize = 4;
/// The kernel fills at most 32 KiB per dump message batch; a larger buffer never truncates.
const RECV_BUF: usize = 64 * 1024;
/// A netlink request is always answered at once; this only guards against a hang.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// Every listening TCP socket, bound unconnected UDP socket and listening unix stream or
/// seqpacket socket in our network namespace, in the order `/proc/net/{tcp,tcp6,udp,udp6,
/// unix}` would list them. Owners are left empty, as the `/proc/net` parsers leave them.
pub fn read_listeners() -> io::Result<Vec<Listener>> {
    let mut diag = DiagSocket::open()?;
    let mut out = Vec::new();
    for (protocol, wanted_state) in [(Protocol::Tcp, TCP_LISTEN), (Protocol::Udp, TCP_CLOSE)] {
        for family in [AddressFamily::INET, AddressFamily::INET6] {
            let req = inet_request(family, protocol, wanted_state);
            out.extend(diag.dump(&req, |msg| parse_inet(msg, family, protocol, wanted_state))?);
        }
    }
    out.extend(diag.dump(&unix_request(), parse_unix)?);
    Ok(out)
}

/// A NETLINK_SOCK_DIAG socket and its receive buffer.
struct DiagSocket {
    fd: OwnedFd,
    buf: Vec<u8>,
    seq: u32,
}

impl DiagSocket {
    fn open() -> io::Result<Self> {
        let fd = netlink::socket(rustix::net::netlink::SOCK_DIAG, false)?;
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(RECV_TIMEOUT),
        )?;
        Ok(DiagSocket {
            fd,
            buf: vec![0; RECV_BUF],
            seq: 0,
        })
    }

    /// Sends one dump request (`body` follows the netlink header) and returns what `parse`
    /// keeps of each reply message, starting over when the kernel says the dump was
    /// interrupted.
    fn dump<T>(
        &mut self,
        body: &[u8],
        mut parse: impl FnMut(&[u8]) -> Option<T>,
    ) -> io::Result<Vec<T>> {
        for _ in 0..DUMP_ATTEMPTS {
            let mut out = Vec::new();
            if !self.dump_once(body, &mut |msg| out.extend(parse(msg)))? {
                return Ok(out);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::Interrupted,
            format!("sock_diag dump interrupted {DUMP_ATTEMPTS} times in a row"),
        ))
    }

    /// One dump, read to its NLMSG_DONE. Returns whether it was interrupted (the kernel
    /// flagged a message NLM_F_DUMP_INTR: what it sent may be inconsistent).
    fn dump_once(&mut self, body: &[u8], each: &mut dyn FnMut(&[u8])) -> io::Result<bool> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        netlink::send(&self.fd, &nl_request(seq, body))?;
        let mut interrupted = false;
        loop {
            let (_, len) = rustix::net::recv(&self.fd, &mut self.buf[..], RecvFlags::TRUNC)?;
            if len > self.buf.len() {
                return Err(bad_reply("sock_diag reply larger than the receive buffer"));
            }
            if len == 0 {
                return Err(bad_reply("empty sock_diag reply"));
            }
            if read_datagram(&self.buf[..len], seq, &mut interrupted, each)? {
                return Ok(interrupted);
            }
        }
    }
}

/// Hands the SOCK_DIAG_BY_FAMILY payloads of one reply datagram (to request `seq`) to
/// `each`. Returns whether the dump is complete (NLMSG_DONE seen); sets `interrupted` when a
/// message carries NLM_F_DUMP_INTR; an NLMSG_ERROR, or a DONE with a negative status, is
/// that errno.
fn read_datagram(
    buf: &[u8],
    seq: u32,
    interrupted: &mut bool,
    each: &mut dyn FnMut(&[u8]),
) -> io::Result<bool> {
    for msg in messages(buf) {
        let msg = msg?;
        if msg.seq != seq {
            // Left over from an earlier request on this socket: not ours to read.
            continue;
        }
        *interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
        match msg.kind {
            NLMSG_DONE => {
                // The payload, when present, is the dump's status: <0 is an errno.
                return match i32_at(msg.payload, 0) {
                    Some(status) if status < 0 => Err(io::Error::from_raw_os_error(-status)),
                    _ => Ok(true),
                };
            }
            NLMSG_ERROR => {
                let errno =
                    i32_at(msg.payload, 0).ok_or_else(|| bad_reply("short NLMSG_ERROR message"))?;
                return Err(if errno < 0 {
                    io::Error::from_raw_os_error(-errno)
                } else {
                    bad_reply("unexpected netlink ACK to a dump request")
                });
            }
            SOCK_DIAG_BY_FAMILY => each(msg.payload),
            _ => {}
        }
    }
    Ok(false)
}

fn bad_reply(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// A SOCK_DIAG_BY_FAMILY dump request: netlink header, then `body`.
fn nl_request(seq: u32, body: &[u8]) -> Vec<u8> {
    netlink::message(
        SOCK_DIAG_BY_FAMILY,
        netlink::NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        body,
    )
}

/// `inet_diag_req_v2` for every socket of `family`/`protocol` in `state`.
fn inet_request(
    family: AddressFamily,
    protocol: Protocol,
    state: u8,
) -> [u8; INET_DIAG_REQ_V2_LEN] {
    let mut req = [0u8; INET_DIAG_REQ_V2_LEN];
    req[0] = family.as_raw() as u8; // sdiag_family
    req[1] = match protocol {
        Protocol::Udp => libc::IPPROTO_UDP as u8,
        _ => libc::IPPROTO_TCP as u8,
    }; // sdiag_protocol
       // idiag_ext (2) and pad (3) stay 0; the sockid (from 8) stays 0: match any socket.
    req[4..8].copy_from_slice(&(1u32 << state).to_ne_bytes()); // idiag_states
    req
}

/// `unix_diag_req` for every listening unix socket, with its name.
fn unix_request() -> [u8; UNIX_DIAG_REQ_LEN] {
    let mut req = [0u8; UNIX_DIAG_REQ_LEN];
    req[0] = libc::AF_UNIX as u8; // sdiag_family; sdiag_protocol and pad stay 0
    req[4..8].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes()); // udiag_states
                                                                    // udiag_ino (8) stays 0: any socket.
    req[12..16].copy_from_slice(&UDIAG_SHOW_NAME.to_ne_bytes()); // udiag_show
    req
}

/// One `inet_diag_msg`, kept when it is a listener by the rules of [`super::net::parse_inet`].
fn parse_inet(
    msg: &[u8],
    family: AddressFamily,
    protocol: Protocol,
    wanted_state: u8,
) -> Option<Listener> {
    if msg.len() < INET_DIAG_MSG_LEN {
        return None;
    }
    if msg[0] != family.as_raw() as u8 || msg[1] != wanted_state {
        return None;
    }
    // The port and address are in network byte order.
    let port = u16::from_be_bytes(msg.get(4..6)?.try_into().ok()?);
    if port == 0 {
        return None;
    }
    let (ip_version, address) = if family == AddressFamily::INET {
        let a: [u8; 4] = msg.get(8..12)?.try_into().ok()?;
        (4, Ipv4Addr::from(a).to_string())
    } else {
        let a: [u8; 16] = msg.get(8..24)?.try_into().ok()?;
        (6, Ipv6Addr::from(a).to_string())
    };
    let inode = u64::from(u32_at(msg, 68)?);
    if inode == 0 {
        return None;
    }
    Some(Listener {
        protocol,
        ip_version: Some(ip_version),
        address: Some(address),
        port: Some(port),
        path: None,
        kind: None,
        inode,
        uid: Some(u32_at(msg, 64)?),
        owners: Vec::new(),
    })
}

/// One `unix_diag_msg` and its attributes, kept when it is a listening stream or seqpacket
/// socket, as [`super::net::parse_unix`] keeps them.
fn parse_unix(msg: &[u8]) -> Option<Listener> {
    if msg.len() < UNIX_DIAG_MSG_LEN || msg[0] != libc::AF_UNIX as u8 || msg[2] != TCP_LISTEN {
        return None;
    }
    let kind = match msg[1] {
        SOCK_STREAM => SocketKind::Stream,
        SOCK_SEQPACKET => SocketKind::Seqpacket,
        _ => return None,
    };
    let inode = u64::from(u32_at(msg, 4)?);
    let path = attributes(&msg[UNIX_DIAG_MSG_LEN..])
        .find(|&(kind, _)| kind == UNIX_DIAG_NAME)
        .map(|(_, name)| unix_name(name))
        .filter(|name| !name.is_empty())
        .map(Bytes::from);
    Some(Listener {
        protocol: Protocol::Unix,
        ip_version: None,
        address: None,
        port: None,
        path,
        kind: Some(kind),
        inode,
        uid: None,
        owners: Vec::new(),
    })
}

/// The netlink attributes (type, payload) in `buf`; stops at the first malformed one.
fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(buf, 0)?);
        let kind = u16_at(buf, 2)? & NLA_TYPE_MASK;
        let payload = buf.get(NLA_HDRLEN..len)?;
        buf = buf.get(align4(len)..).unwrap_or(&[]);
        Some((kind, payload))
    })
}

/// A unix socket name (the `sun_path` bytes the kernel stored, `UNIX_DIAG_NAME`) as
/// `/proc/net/unix` prints it: a path name without its terminating NUL, an abstract name
/// with its leading NUL as `@`, and any other NUL as `@` too.
fn unix_name(sun_path: &[u8]) -> Vec<u8> {
    let shown = match sun_path.first() {
        None => return Vec::new(),
        Some(0) => sun_path,
        Some(_) => &sun_path[..sun_path.len() - 1],
    };
    shown
        .iter()
        .map(|&b| if b == 0 { b'@' } else { b })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::io::Write as _;
    use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
    use std::os::fd::AsFd;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram, UnixListener, UnixStream};

    use rustix::net::SocketAddrUnix;

    use super::super::net;
    use super::*;

    fn ino(fd: impl AsFd) -> u64 {
        rustix::fs::fstat(fd).unwrap().st_ino
    }

    fn euid() -> Option<u32> {
        Some(rustix::process::geteuid().as_raw())
    }

    /// What the `/proc/net` path reads, the way `read_listeners` in mod.rs reads it.
    fn proc_net() -> Vec<Listener> {
        let mut out = Vec::new();
        for (file, protocol, v) in [
            ("tcp", Protocol::Tcp, 4),
            ("tcp6", Protocol::Tcp, 6),
            ("udp", Protocol::Udp, 4),
            ("udp6", Protocol::Udp, 6),
        ] {
            if let Ok(buf) = std::fs::read(format!("/proc/net/{file}")) {
                out.extend(net::parse_inet(&buf, protocol, v));
            }
        }
        out.extend(net::parse_unix(&std::fs::read("/proc/net/unix").unwrap()));
        out
    }

    fn only(ls: Vec<Listener>, inodes: &BTreeSet<u64>) -> Vec<Listener> {
        let mut ls: Vec<Listener> = ls
            .into_iter()
            .filter(|l| inodes.contains(&l.inode))
            .collect();
        ls.sort_by_key(|l| l.inode);
        ls
    }

    fn inet(protocol: Protocol, addr: SocketAddr, inode: u64) -> Listener {
        Listener {
            protocol,
            ip_version: Some(if addr.is_ipv4() { 4 } else { 6 }),
            address: Some(addr.ip().to_string()),
            port: Some(addr.port()),
            path: None,
            kind: None,
            inode,
            uid: euid(),
            owners: vec![],
        }
    }

    fn unix(kind: SocketKind, path: &[u8], inode: u64) -> Listener {
        Listener {
            protocol: Protocol::Unix,
            ip_version: None,
            address: None,
            port: None,
            path: Some(Bytes::from(path)),
            kind: Some(kind),
            inode,
            uid: None,
            owners: vec![],
        }
    }

    #[test]
    fn finds_own_listeners_exactly_as_proc_net_does() {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = Vec::new();
        let mut absent = Vec::new();
        let mut keep: Vec<OwnedFd> = Vec::new();

        // TCP: listeners on v4, v6 loopback, v6 any and a v4-mapped v6 address.
        let mut tcp_addrs = vec!["127.0.0.1:0"];
        let v6 = TcpListener::bind("[::1]:0").is_ok();
        if v6 {
            tcp_addrs.extend(["[::1]:0", "[::]:0", "[::ffff:127.0.0.1]:0"]);
        }
        for a in tcp_addrs {
            let l = TcpListener::bind(a).unwrap();
            expected.push(inet(Protocol::Tcp, l.local_addr().unwrap(), ino(&l)));
            keep.push(l.into());
        }
        // An accepted connection: the listener shows, both established ends do not.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        expected.push(inet(Protocol::Tcp, l.local_addr().unwrap(), ino(&l)));
        absent.extend([ino(&client), ino(&server)]);
        keep.extend([l.into(), client.into(), server.into()]);
        // A bound but not listening TCP socket does not show.
        let bound = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        rustix::net::bind(&bound, &"127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap();
        absent.push(ino(&bound));
        keep.push(bound);

        // UDP: bound sockets show, a connected one does not.
        let mut udp_addrs = vec!["127.0.0.1:0"];
        if v6 {
            udp_addrs.extend(["[::1]:0", "[::]:0"]);
        }
        for a in udp_addrs {
            let u = UdpSocket::bind(a).unwrap();
            expected.push(inet(Protocol::Udp, u.local_addr().unwrap(), ino(&u)));
            keep.push(u.into());
        }
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let connected = UdpSocket::bind("127.0.0.1:0").unwrap();
        connected.connect(peer.local_addr().unwrap()).unwrap();
        absent.push(ino(&connected));
        keep.extend([peer.into(), connected.into()]);

        // Unix stream listeners on a plain path and a path with a space.
        for name in ["plain.sock", "with space.sock"] {
            let path = dir.path().join(name);
            let l = UnixListener::bind(&path).unwrap();
            let raw = path.as_os_str().as_encoded_bytes();
            expected.push(unix(SocketKind::Stream, raw, ino(&l)));
            // Connected ends (client and accepted) are not listeners.
            let client = UnixStream::connect(&path).unwrap();
            let (server, _) = l.accept().unwrap();
            absent.extend([ino(&client), ino(&server)]);
            keep.extend([l.into(), client.into(), server.into()]);
        }
        // A seqpacket listener.
        let path = dir.path().join("seq.sock");
        let seq = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
        rustix::net::bind(&seq, &SocketAddrUnix::new(&path).unwrap()).unwrap();
        rustix::net::listen(&seq, 8).unwrap();
        let raw = path.as_os_str().as_encoded_bytes();
        expected.push(unix(SocketKind::Seqpacket, raw, ino(&seq)));
        keep.push(seq);
        // An abstract name, with a NUL and a space inside: shown as `@` like the leading NUL.
        let tag = format!(
            "cij-sockdiag-{}-{}",
            std::process::id(),
            dir.path().file_name().unwrap().to_string_lossy()
        );
        let name = format!("{tag}\0x y");
        let l = UnixListener::bind_addr(&UnixAddr::from_abstract_name(&name).unwrap()).unwrap();
        expected.push(unix(
            SocketKind::Stream,
            format!("@{tag}@x y").as_bytes(),
            ino(&l),
        ));
        keep.push(l.into());
        // Bound but not listening: a stream socket and a datagram socket.
        let bound = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
        let bound_path = dir.path().join("bound.sock");
        rustix::net::bind(&bound, &SocketAddrUnix::new(&bound_path).unwrap()).unwrap();
        let dgram = UnixDatagram::bind(dir.path().join("dgram.sock")).unwrap();
        absent.extend([ino(&bound), ino(&dgram)]);
        keep.extend([bound, dgram.into()]);

        let ours: BTreeSet<u64> = expected
            .iter()
            .map(|l| l.inode)
            .chain(absent.iter().copied())
            .collect();
        assert_eq!(
            ours.len(),
            expected.len() + absent.len(),
            "inodes are distinct"
        );

        let diag = read_listeners().unwrap();
        for want in &expected {
            let got: Vec<&Listener> = diag.iter().filter(|l| l.inode == want.inode).collect();
            assert_eq!(got, [want], "{}", want.label());
        }
        for inode in &absent {
            assert!(
                !diag.iter().any(|l| l.inode == *inode),
                "inode {inode} is no listener"
            );
        }
        // (b) the /proc/net parsers agree, value for value, on all of our sockets.
        let mut sorted = expected.clone();
        sorted.sort_by_key(|l| l.inode);
        assert_eq!(only(diag, &ours), sorted);
        assert_eq!(only(proc_net(), &ours), sorted);
        drop(keep);
    }

    #[test]
    fn kernel_errors_are_io_errors() {
        let mut diag = DiagSocket::open().unwrap();
        // An address family the kernel has no sock_diag handler for.
        let mut req = unix_request();
        req[0] = 255;
        let err = diag.dump(&req, |_| Some(())).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
        // The socket still serves the next request.
        assert!(diag.dump(&unix_request(), parse_unix).is_ok());
    }

    fn nl_msg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(align4(len), 0);
        m
    }

    #[test]
    fn datagrams_multi_part_done_error_and_interrupted() {
        let mut seen = Vec::new();
        let mut intr = false;
        // Two payloads and a stale message from another request, no DONE yet: more to come.
        let mut d = nl_msg(SOCK_DIAG_BY_FAMILY, 0x2, 7, b"a");
        d.extend(nl_msg(SOCK_DIAG_BY_FAMILY, 0x2, 6, b"stale"));
        d.extend(nl_msg(SOCK_DIAG_BY_FAMILY, 0x2, 7, b"bcdef"));
        let done = read_datagram(&d, 7, &mut intr, &mut |p| seen.push(p.to_vec())).unwrap();
        assert!(!done && !intr);
        // Then an interrupted message and DONE.
        let mut d = nl_msg(SOCK_DIAG_BY_FAMILY, 0x2 | NLM_F_DUMP_INTR, 7, b"g");
        d.extend(nl_msg(NLMSG_DONE, 0x2, 7, &0i32.to_ne_bytes()));
        let done = read_datagram(&d, 7, &mut intr, &mut |p| seen.push(p.to_vec())).unwrap();
        assert!(done && intr);
        assert_eq!(seen, [b"a".to_vec(), b"bcdef".to_vec(), b"g".to_vec()]);

        let mut intr = false;
        let err = read_datagram(
            &nl_msg(NLMSG_ERROR, 0, 7, &(-libc::ENOENT).to_ne_bytes()),
            7,
            &mut intr,
            &mut |_| {},
        );
        assert_eq!(err.unwrap_err().raw_os_error(), Some(libc::ENOENT));
        let err = read_datagram(
            &nl_msg(NLMSG_DONE, 0, 7, &(-libc::EINTR).to_ne_bytes()),
            7,
            &mut intr,
            &mut |_| {},
        );
        assert_eq!(err.unwrap_err().raw_os_error(), Some(libc::EINTR));
        // A header claiming more than the datagram holds.
        let mut bad = nl_msg(SOCK_DIAG_BY_FAMILY, 0, 7, b"abcd");
        bad[0] = 200;
        let err = read_datagram(&bad, 7, &mut intr, &mut |_| {});
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn unix_names_render_like_proc_net_unix() {
        assert_eq!(unix_name(b"/tmp/a b.sock\0"), b"/tmp/a b.sock");
        assert_eq!(unix_name(b"\0abstract"), b"@abstract");
        assert_eq!(unix_name(b"\0a\0b"), b"@a@b");
        assert_eq!(unix_name(b"\0"), b"@");
        assert_eq!(unix_name(b""), b"");
    }

    #[test]
    fn attributes_skip_padding_and_stop_at_garbage() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&5u16.to_ne_bytes());
        buf.extend_from_slice(&9u16.to_ne_bytes());
        buf.extend_from_slice(b"x\0\0\0");
        buf.extend_from_slice(&7u16.to_ne_bytes());
        buf.extend_from_slice(&UNIX_DIAG_NAME.to_ne_bytes());
        buf.extend_from_slice(b"abc\0");
        buf.extend_from_slice(&[200, 0, 1, 0]);
        let attrs: Vec<(u16, &[u8])> = attributes(&buf).collect();
        assert_eq!(attrs, [(9, &b"x"[..]), (UNIX_DIAG_NAME, &b"abc"[..])]);
    }

    /// Times `read_listeners` against the `/proc/net` parsers with ~1,000 TCP listeners and
    /// ~1,000 established loopback connections open. Run alone, in release:
    /// `cargo test --release --lib sock_diag::tests::bench -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark; opens ~3,000 sockets"]
    fn bench_against_proc_net() {
        use std::time::Instant;
        let n = 1000;
        let listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let hub = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut conns = Vec::new();
        for _ in 0..n {
            let mut c = TcpStream::connect(hub.local_addr().unwrap()).unwrap();
            c.write_all(b"x").unwrap();
            conns.push((c, hub.accept().unwrap().0));
        }
        let tcp_lines = std::fs::read_to_string("/proc/net/tcp")
            .unwrap()
            .lines()
            .count()
            - 1;
        println!(
            "/proc/net/tcp rows: {tcp_lines}; unix rows: {}",
            std::fs::read_to_string("/proc/net/unix")
                .unwrap()
                .lines()
                .count()
                - 1
        );

        let (a, b) = (read_listeners().unwrap(), proc_net());
        println!(
            "listeners: sock_diag {}, /proc/net {}; identical (order too): {}",
            a.len(),
            b.len(),
            a == b
        );

        // Both readers in turn, 51 times: any background load hits both alike.
        let (mut diag_us, mut proc_us) = (Vec::new(), Vec::new());
        for _ in 0..51 {
            let t = Instant::now();
            assert!(!read_listeners().unwrap().is_empty());
            diag_us.push(t.elapsed().as_secs_f64() * 1e6);
            let t = Instant::now();
            assert!(!proc_net().is_empty());
            proc_us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (d, p) = (median(diag_us), median(proc_us));
        println!(
            "median of 51: sock_diag {d:.0} us, /proc/net {p:.0} us ({:.1}x)",
            p / d
        );
        drop((listeners, conns));
    }
}
